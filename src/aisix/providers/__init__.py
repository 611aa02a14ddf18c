"""Provider adapters: translation to and from each upstream wire family, and the transport."""
