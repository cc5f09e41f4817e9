#!/usr/bin/env python3
"""Demo credentials for trying kafka-gateway's front door, made with openssl.

    python3 examples/security/demo_credentials.py DIR [PRINCIPAL ...]

writes to DIR:
  ca.pem, ca-key.pem                a CA (30 days)
  server.pem, server-key.pem        a server certificate for localhost and 127.0.0.1
  signing-key.pem, jwks.json        an ES256 signing key and its JWKS (kid "demo-1")
  PRINCIPAL.jwt                     a token for each principal (default: orders-service),
                                    issuer https://demo.issuer, audience kafka-gateway, 12 hours
  PRINCIPAL.pem, PRINCIPAL-key.pem  a client certificate (CN PRINCIPAL), for mutual TLS

For trying things out only: a real deployment gets its certificates from its
PKI (cert-manager, say) and its tokens from its identity provider, and gives
the gateway the provider's JWKS URL. Needs openssl and Python 3 (no packages).
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time

ISSUER = "https://demo.issuer"
AUDIENCE = "kafka-gateway"
KID = "demo-1"


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def der_ecdsa_to_raw(der):
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JWS's r || s."""
    assert der[0] == 0x30, "not a DER sequence"
    at = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    raw = b""
    for _ in range(2):
        assert der[at] == 0x02, "not a DER integer"
        length = der[at + 1]
        value = der[at + 2:at + 2 + length].lstrip(b"\0")
        raw += value.rjust(32, b"\0")
        at += 2 + length
    return raw


def token(directory, principal):
    header = b64url(json.dumps({"alg": "ES256", "kid": KID, "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"sub": principal, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 12 * 3600}
    payload = b64url(json.dumps(claims).encode())
    signed = f"{header}.{payload}".encode()
    der = openssl("dgst", "-sha256", "-sign", os.path.join(directory, "signing-key.pem"), data=signed)
    return f"{header}.{payload}.{b64url(der_ecdsa_to_raw(der))}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    principals = sys.argv[2:] or ["orders-service"]
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    openssl("req", "-x509", *ec, "-keyout", path("ca-key.pem"), "-out", path("ca.pem"),
            "-days", "30", "-subj", "/CN=kafka-gateway demo CA")

    def leaf(name, cn, extensions):
        with tempfile.TemporaryDirectory() as scratch:
            csr, ext = os.path.join(scratch, "req.csr"), os.path.join(scratch, "ext.cnf")
            with open(ext, "w") as f:
                f.write(extensions)
            openssl("req", *ec, "-keyout", path(f"{name}-key.pem"), "-out", csr, "-subj", f"/CN={cn}")
            openssl("x509", "-req", "-in", csr, "-CA", path("ca.pem"), "-CAkey", path("ca-key.pem"),
                    "-CAcreateserial", "-out", path(f"{name}.pem"), "-days", "30", "-extfile", ext)

    leaf("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path("signing-key.pem"))
    point = openssl("ec", "-in", path("signing-key.pem"), "-pubout", "-outform", "DER")[-64:]
    jwk = {"kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
           "x": b64url(point[:32]), "y": b64url(point[32:])}
    with open(path("jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f, indent=2)

    for principal in principals:
        with open(path(f"{principal}.jwt"), "w") as f:
            f.write(token(directory, principal) + "\n")
        leaf(principal, principal, "extendedKeyUsage=clientAuth\n")

    print(f"wrote to {directory}: ca.pem, server.pem, server-key.pem, jwks.json, and for "
          + ", ".join(principals) + f": a token (.jwt, issuer {ISSUER}, audience {AUDIENCE}) "
          "and a client certificate (.pem, -key.pem)")


if __name__ == "__main__":
    main()
