"""Chat: channels with a gap-free event sequence, receipts, presence and the delivery hub."""
