"""fairstream.models"""
