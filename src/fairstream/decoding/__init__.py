"""fairstream.decoding"""
