"""fairstream.training"""
