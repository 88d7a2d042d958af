"""ZIP: the format's pure pieces (``writer``: headers and central directory, bytes in and bytes
out) and volume budgets (``volumes``)."""
