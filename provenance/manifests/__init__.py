"""Stage 3, manifests: the C2PA manifest, the service's CA (PKI) and its time-stamp authority."""
