"""fairstream.models.encoders"""
