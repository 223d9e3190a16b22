"""fairstream.mitigation"""
