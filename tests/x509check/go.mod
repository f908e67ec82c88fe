module canopy.dev/tests/x509check

go 1.24
