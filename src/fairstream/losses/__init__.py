"""fairstream.losses"""
