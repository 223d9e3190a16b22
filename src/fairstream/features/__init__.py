"""fairstream.features"""
