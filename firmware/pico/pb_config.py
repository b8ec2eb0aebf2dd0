# settings.json on the Pico's flash (docs/deploy.md): what the button needs to know.
import json

DEFAULTS = {
    "broker": {"port": 8883, "server_hostname": None},
    "ntp_host": "pool.ntp.org",
    "pins": {"button": 15, "led": "LED"},
    "timing": {"debounce_ms": 30, "heartbeat_s": 30, "retry_s": 5, "ack_timeout_s": 30,
               "keepalive_s": 30, "help_s": 300, "join_timeout_s": 20},
    "kind": "emergency",
}
REQUIRED = ("device_id", "wifi.ssid", "wifi.key", "broker.host", "tls.cert", "tls.key", "tls.ca",
            "site.id", "site.name", "site.lat", "site.lon")


class ConfigError(Exception):
    pass


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load(path="settings.json"):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("%s: cannot read it (copy it to the Pico: docs/deploy.md)" % path) from None
    except ValueError:
        raise ConfigError("%s: not valid JSON" % path) from None
    if not isinstance(cfg, dict):
        raise ConfigError("%s: must be a JSON object" % path)
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            merged = dict(value)
            merged.update(cfg.get(key) or {})
            cfg[key] = merged
        else:
            cfg.setdefault(key, value)
    for dotted in REQUIRED:
        if _get(cfg, dotted) is None:
            raise ConfigError("%s: '%s' is missing" % (path, dotted))
    dev = cfg["device_id"]
    if not isinstance(dev, str) or not 2 <= len(dev) <= 63 or \
            not all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in dev) or dev[0] == "-":
        raise ConfigError("%s: 'device_id' must be 2-63 of a-z, 0-9 and '-'" % path)
    if cfg["kind"] not in ("emergency", "test"):
        raise ConfigError("%s: 'kind' must be 'emergency' or 'test'" % path)
    if not cfg["broker"]["server_hostname"]:
        cfg["broker"]["server_hostname"] = cfg["broker"]["host"]
    return cfg
