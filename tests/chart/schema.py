#!/usr/bin/env python3
"""Writes charts/canopy-issuer/values.schema.json (draft-07). Run after changing values:
    python3 tests/chart/schema.py
The chart tests check that the committed file equals what this script writes."""
import json
import pathlib
import sys

def obj(props, required=(), extra=False, **kw):
    o = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        o["required"] = list(required)
    o.update(kw)
    return o

def string(desc=None, **kw):
    s = {"type": "string", **kw}
    if desc:
        s["description"] = desc
    return s

STR = {"type": "string"}
BOOL = {"type": "boolean"}
MAP = {"type": "object"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
K8S_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
K8S_NAME_OR_EMPTY = {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", "maxLength": 253}
NAMESPACE = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
SECRET_KEY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$", "maxLength": 253}
SECRET_KEY_OR_EMPTY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]*$", "maxLength": 253}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
QUANTITY = {"type": ["string", "integer", "number"]}
RESOURCES = obj({
    "requests": {"type": "object", "additionalProperties": QUANTITY},
    "limits": {"type": "object", "additionalProperties": QUANTITY},
})
INTERMEDIATE_NAME = {"type": "string", "pattern": "^[a-z0-9_-]{1,63}$"}
CLUSTER_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
SECRET_REF = obj({"name": K8S_NAME, "key": SECRET_KEY}, required=["name"])
PEERS = {"type": "array", "items": MAP}

schema = obj({
    "global": MAP,
    "nameOverride": STR,
    "fullnameOverride": STR,
    "image": obj({
        "repository": string(minLength=1),
        "tag": STR,
        "digest": string(pattern="^(sha256:[0-9a-f]{64})?$"),
        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    }, required=["repository"]),
    "imagePullSecrets": {"type": "array", "items": K8S_NAME},
    "replicaCount": {"type": "integer", "minimum": 1},
    "trustDomain": string("SPIFFE trust domain",
                          pattern="^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$", maxLength=255),
    "roots": obj({
        "existingConfigMap": K8S_NAME_OR_EMPTY,
        "existingSecret": K8S_NAME_OR_EMPTY,
        "keys": {"type": "array", "items": SECRET_KEY, "minItems": 1, "uniqueItems": True},
    }, required=["keys"],
        # Exactly one source of the roots.
        oneOf=[
            {"properties": {"existingConfigMap": {"minLength": 1}, "existingSecret": {"maxLength": 0}},
             "required": ["existingConfigMap"]},
            {"properties": {"existingSecret": {"minLength": 1}, "existingConfigMap": {"maxLength": 0}},
             "required": ["existingSecret"]},
        ]),
    "intermediates": {
        "type": "array", "minItems": 1,
        "items": obj({
            "name": INTERMEDIATE_NAME,
            "existingSecret": K8S_NAME,
            "certKey": SECRET_KEY,
            "keyKey": SECRET_KEY,
            "passphraseKey": SECRET_KEY_OR_EMPTY,
        }, required=["name", "existingSecret"]),
    },
    "defaultIntermediate": {"anyOf": [{"const": ""}, INTERMEDIATE_NAME]},
    "listen": obj({
        "port": PORT,
        "intermediate": {"anyOf": [{"const": ""}, INTERMEDIATE_NAME]},
        "extraServerNames": {"type": "array", "items": string(minLength=1)},
        "serverIps": {"type": "array", "items": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}},
        "tls": obj({"existingSecret": K8S_NAME_OR_EMPTY, "certKey": SECRET_KEY, "keyKey": SECRET_KEY}),
    }),
    "clusterDomain": string(minLength=1),
    "storage": obj({
        "type": {"enum": ["sqlite", "postgres"]},
        "maxConnections": {"type": "integer", "minimum": 1},
        "sqlite": obj({"existingClaim": K8S_NAME_OR_EMPTY,
                       "file": string(pattern="^[-._a-zA-Z0-9]+$")}),
        "postgres": obj({"existingSecret": K8S_NAME_OR_EMPTY, "key": SECRET_KEY}),
    }, required=["type"],
        allOf=[{
            "if": {"properties": {"type": {"const": "postgres"}}},
            "then": {"properties": {"postgres": {"properties": {"existingSecret": {"minLength": 1}},
                                                 "required": ["existingSecret"]}},
                     "required": ["postgres"]},
        }]),
    "clusters": {
        "type": "array",
        "items": obj({
            "name": CLUSTER_NAME,
            "intermediate": INTERMEDIATE_NAME,
            "inCluster": BOOL,
            "kubeconfigSecret": SECRET_REF,
            "context": STR,
            "jwt": obj({
                "audiences": {"type": "array", "minItems": 1, "items": string(minLength=1)},
                "issuer": STR,
                "jwks": MAP,
                "jwksConfigMap": SECRET_REF,
            }, required=["audiences"], oneOf=[
                {"required": ["jwks"], "not": {"required": ["jwksConfigMap"]}},
                {"required": ["jwksConfigMap"], "not": {"required": ["jwks"]}},
            ]),
            "istio": MAP,
            "extra": MAP,
        }, required=["name", "intermediate"],
            # Either this cluster (inCluster) or a kubeconfig, never both.
            oneOf=[
                {"properties": {"inCluster": {"const": True}}, "required": ["inCluster"],
                 "not": {"required": ["kubeconfigSecret"]}},
                {"required": ["kubeconfigSecret"],
                 "not": {"properties": {"inCluster": {"const": True}}, "required": ["inCluster"]}},
            ]),
    },
    "policies": {"type": "array", "items": obj({"name": INTERMEDIATE_NAME}, required=["name"], extra=True)},
    "limits": obj({
        "rate_per_second": {"type": "integer", "minimum": 1},
        "burst": {"type": "integer", "minimum": 1},
        "body_bytes": {"type": "integer", "minimum": 4096},
        "request_timeout": STR,
    }),
    "extraConfig": MAP,
    "logLevel": STR,
    "certManager": obj({
        "enabled": BOOL,
        "clusterResourceNamespace": {"anyOf": [{"const": ""}, NAMESPACE]},
        "issuerNamespaces": {"type": "array", "items": NAMESPACE, "uniqueItems": True},
        "csrApi": obj({"enabled": BOOL}),
        "approver": obj({
            "enabled": BOOL,
            "serviceAccount": obj({"name": K8S_NAME, "namespace": NAMESPACE}, required=["name", "namespace"]),
        }),
    }),
    "istio": obj({
        "enabled": BOOL,
        "namespace": NAMESPACE,
        "bootstrap": obj({
            "enabled": BOOL,
            "hookWeight": {"type": "integer"},
            "backoffLimit": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
            "resources": RESOURCES,
        }),
    }),
    "rbac": obj({"create": BOOL}),
    "serviceAccount": obj({"create": BOOL, "name": K8S_NAME_OR_EMPTY,
                           "annotations": {"type": "object", "additionalProperties": STR}}),
    "service": obj({
        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "port": PORT,
        "annotations": {"type": "object", "additionalProperties": STR},
    }),
    "resources": RESOURCES,
    "probes": obj({
        k: obj({"initialDelaySeconds": {"type": "integer", "minimum": 0},
                "periodSeconds": {"type": "integer", "minimum": 1},
                "failureThreshold": {"type": "integer", "minimum": 1}})
        for k in ("liveness", "readiness")
    }),
    "podSecurityContext": MAP,
    "securityContext": MAP,
    "podAnnotations": {"type": "object", "additionalProperties": STR},
    "podLabels": {"type": "object", "additionalProperties": STR},
    "nodeSelector": {"type": "object", "additionalProperties": STR},
    "tolerations": {"type": "array", "items": MAP},
    "affinity": MAP,
    "topologySpreadConstraints": {"type": "array", "items": MAP},
    "priorityClassName": STR,
    "podDisruptionBudget": obj({
        "enabled": BOOL,
        "minAvailable": {"type": ["integer", "string"]},
        "maxUnavailable": {"type": ["integer", "string", "null"]},
    }),
    "networkPolicy": obj({
        "enabled": BOOL,
        "ingressFrom": PEERS,
        "dns": obj({"to": PEERS}),
        "apiServer": obj({"cidrs": {"type": "array", "items": string(pattern="^[0-9a-fA-F:.]+/[0-9]{1,3}$")},
                          "ports": {"type": "array", "minItems": 1, "items": PORT}}),
        "database": obj({"to": PEERS, "port": PORT}),
        "extraEgress": {"type": "array", "items": MAP},
    }),
    "serviceMonitor": obj({
        "enabled": BOOL,
        "labels": {"type": "object", "additionalProperties": STR},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "tlsConfig": MAP,
    }),
}, required=["image", "replicaCount", "trustDomain", "roots", "intermediates", "storage", "clusters"],
    # One SQLite file has one writer: several replicas need PostgreSQL.
    allOf=[{
        "if": {"properties": {"storage": {"properties": {"type": {"const": "sqlite"}}}}},
        "then": {"properties": {"replicaCount": {"maximum": 1}}},
    }])

schema = {"$schema": "http://json-schema.org/draft-07/schema#",
          "title": "canopy-issuer chart values", **schema}

out = pathlib.Path(__file__).resolve().parents[2] / "charts/canopy-issuer/values.schema.json"
text = json.dumps(schema, indent=2) + "\n"
if "--check" in sys.argv:
    sys.exit(0 if out.read_text() == text else 1)
out.write_text(text)
