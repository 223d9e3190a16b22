"""fairstream.audit"""
