"""knetc"""
