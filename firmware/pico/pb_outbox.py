# The persistent outbox on the flash filesystem: one small JSON file per unconfirmed alert,
# written (temp file, rename) before the LED says "sending", so a press survives a reboot. The
# alert id and seq are chosen once, at the press, and written with it: a replay after a reboot
# re-announces the same alert, which the room folds into the same incident.
import json
import os

DIR = "outbox"
SEQ = "seq"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # atomic on littlefs and POSIX: the old file or the new, never half


class Outbox:
    def __init__(self, log):
        self.log = log
        if not _exists(DIR):
            os.mkdir(DIR)
        self.seq = 0
        try:
            with open(SEQ) as f:
                self.seq = int(f.read())
        except (OSError, ValueError):
            pass

    def add(self, rec):
        """Give `rec` the next seq and store it; returns once it is on flash."""
        self.seq += 1
        _write(SEQ, str(self.seq))  # first: a crash after it only skips a seq
        rec["seq"] = self.seq
        self.save(rec)

    def save(self, rec):
        _write("%s/%s.json" % (DIR, rec["alert_id"]), json.dumps(rec))

    def remove(self, alert_id):
        try:
            os.remove("%s/%s.json" % (DIR, alert_id))
        except OSError:
            pass

    def pending(self):
        """Every stored alert, oldest (lowest seq) first; leftovers of a cut write go."""
        found = []
        for name in os.listdir(DIR):
            path = "%s/%s" % (DIR, name)
            if name.endswith(".bad"):
                continue
            if not name.endswith(".json"):
                os.remove(path)  # a temp file of a write cut short
                continue
            try:
                with open(path) as f:
                    rec = json.load(f)
                found.append(rec)
            except (OSError, ValueError):
                self.log("outbox: %s unreadable, kept aside as .bad" % name)
                os.rename(path, path[:-5] + ".bad")
        found.sort(key=lambda r: r["seq"])
        return found
