"""S3: clients (``client``, ``target``, ``connect`` through the network policy), the multipart
sink (``sink``), a file sent while it is written (``growing``) and a server-side rename (``move``)."""
