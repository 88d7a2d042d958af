"""Column sets of the tables a new Outlook store holds, as read from an empty Outlook store.

Every table of a kind (hierarchy, contents, associated contents, recipients, attachments)
uses its template's columns, which is what Outlook expects to find; the template nodes
themselves (0x60D...) are written empty. Columns are listed in Outlook's order (the order of
their CEB bits, and of their cells within each width), not by tag. Only properties without
named-property ids appear, so no table depends on the name-to-id map.
"""

from __future__ import annotations

HIERARCHY_COLUMNS = (
    0x3001001F, 0x36020003, 0x36030003, 0x360A000B, 0x0E300102, 0x0E330014, 0x0E340102,
    0x0E380003, 0x3613001F, 0x66350003, 0x66360003,
)  # fmt: skip

CONTENTS_COLUMNS = (
    0x0E170003, 0x001A001F, 0x0E070003, 0x00170003, 0x0042001F, 0x0037001F, 0x0E060040,
    0x00390040, 0x0E080003, 0x0E04001F, 0x0E03001F, 0x0057000B, 0x0058000B, 0x00360003,
    0x10970003, 0x0070001F, 0x00710102, 0x30130102, 0x65C60003, 0x30080040, 0x0E300102,
    0x0E330014, 0x0E340102, 0x0E3D0102, 0x0E3C0102, 0x0E380003,
)  # fmt: skip

ASSOC_CONTENTS_COLUMNS = (
    0x0E170003, 0x001A001F, 0x0E070003, 0x3001001F, 0x70030003, 0x70040102, 0x70050102,
    0x7006001F, 0x70070003, 0x6800001F, 0x6803000B, 0x68051003, 0x682F001F,
)  # fmt: skip

SEARCH_CONTENTS_COLUMNS = (
    0x67F10003, 0x0E05001F, 0x0E170003, 0x001A001F, 0x0E070003, 0x00170003, 0x0042001F,
    0x0037001F, 0x0E060040, 0x0E080003, 0x0E04001F, 0x0E03001F, 0x0057000B, 0x0058000B,
    0x00360003, 0x0E2A000B, 0x30080040,
)  # fmt: skip

RECEIVE_FOLDER_COLUMNS = (0x66050003, 0x001A001F)
OUTGOING_QUEUE_COLUMNS = (0x0E140003, 0x0E100003, 0x00390040)
ATTACHMENT_COLUMNS = (0x370B0003, 0x0E200003, 0x37050003, 0x3704001F)
RECIPIENT_COLUMNS = (
    0x0E0F000B, 0x3002001F, 0x3003001F, 0x0FFF0102, 0x3001001F, 0x0C150003, 0x300B0102,
    0x0FF90102, 0x0FFE0003, 0x39000003, 0x3A40000B, 0x39FF001F,
)  # fmt: skip
# Recipient columns beyond the template that readers use for SMTP addresses and ordering.
RECIPIENT_EXTRA_COLUMNS = (0x39FE001F, 0x3A20001F, 0x5FF6001F, 0x5FFD0003, 0x5FDF0003, 0x5FFF0003)
# Three more empty tables an Outlook store carries (NID types 0x16, 0x17, 0x18).
OTHER_TEMPLATE_COLUMNS = {
    0x6B6: (0x0E330014, 0x0E370102, 0x0E380003),
    0x6D7: (0x0E3E0102, 0x0E310102, 0x0E300102, 0x0E380003, 0x0E340102, 0x0E330014, 0x001A001F),
    0x6F8: (0x30070040, 0x0E330014),
}
