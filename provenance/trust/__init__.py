"""The trust root: what a verifier pins and the document that lists it (``document``), and the owner's
actions that publish it (``admin``)."""
