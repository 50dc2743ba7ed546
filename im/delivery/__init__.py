"""The delivery core: write first, notify, pull, acknowledge, trim.

Every message goes through here, whatever the transport: seqs are allocated and the batch is archived
(``writer``), the heads are published (``sending``), recipients pull (``reader``) and acknowledge
(``acks``), and what every device holds is trimmed from the inbox (the archive keeps it).
"""
