"""IMAP: ``client`` (the Source), ``connect`` (checked connections), ``fetch`` (parsing FETCH
responses fast), ``presets`` (the provider flavours)."""
