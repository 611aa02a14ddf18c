"""Resource stores: where provider keys, models, API keys and policies persist."""
