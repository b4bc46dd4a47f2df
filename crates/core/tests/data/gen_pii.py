"""Generate the labelled PII set (pii_labelled.jsonl) used by guardrails_pii.rs.

The checksums here are written independently of the Rust detectors, so a bug in one is not
repeated in the other. Run: python3 gen_pii.py > pii_labelled.jsonl (the output is committed;
the seed makes it reproducible)."""
import json
import random
import string

rng = random.Random(20261130)


def luhn_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card():
    kind = rng.choice(["visa", "mc", "amex", "disc"])
    if kind == "visa":
        body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    elif kind == "mc":
        body = str(rng.randint(51, 55)) + "".join(rng.choice(string.digits) for _ in range(13))
    elif kind == "amex":
        body = rng.choice(["34", "37"]) + "".join(rng.choice(string.digits) for _ in range(12))
    else:
        body = "6011" + "".join(rng.choice(string.digits) for _ in range(11))
    n = body + luhn_digit(body)
    sep = rng.choice([" ", "-", ""])
    if len(n) == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    return sep.join(n[i:i + 4] for i in range(0, 16, 4))


def bad_luhn(s):
    last = s[-1]
    return s[:-1] + str((int(last) + rng.randint(1, 9)) % 10)


def sin():
    body = str(rng.choice([1, 2, 3, 4, 5, 6, 7, 9])) + "".join(rng.choice(string.digits) for _ in range(7))
    n = body + luhn_digit(body)
    sep = rng.choice([" ", "-"])
    return sep.join([n[:3], n[3:6], n[6:]])


IBAN_LEN = {"DE": 22, "GB": 22, "FR": 27, "ES": 24, "NL": 18, "BE": 16, "IT": 27}


def iban_check(country, bban):
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return "%02d" % (98 - int(digits) % 97)


def iban():
    country = rng.choice(sorted(IBAN_LEN))
    n = IBAN_LEN[country] - 4
    if country in ("GB", "NL"):
        bank = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
        bban = bank + "".join(rng.choice(string.digits) for _ in range(n - 4))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(n))
    raw = country + iban_check(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))
    return raw


def bad_iban(s):
    compact = s.replace(" ", "")
    c = compact[2:4]
    wrong = "%02d" % ((int(c) + rng.randint(1, 90)) % 97 + 2)
    if wrong == c:
        wrong = "%02d" % ((int(c) + 1) % 97 + 2)
    return compact[:2] + wrong + compact[4:]


def aba():
    prefix = rng.choice(["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "21", "22", "26", "31", "32", "61", "65", "71"])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(6))
    w = [3, 7, 1, 3, 7, 1, 3, 7]
    s = sum(int(d) * k for d, k in zip(body, w))
    return body + str((10 - s % 10) % 10)


def bad_last(s):
    return s[:-1] + str((int(s[-1]) + rng.randint(1, 9)) % 10)


VIN_VAL = {**{str(d): d for d in range(10)}, "A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 6, "G": 7, "H": 8,
           "J": 1, "K": 2, "L": 3, "M": 4, "N": 5, "P": 7, "R": 9, "S": 2, "T": 3, "U": 4, "V": 5,
           "W": 6, "X": 7, "Y": 8, "Z": 9}
VIN_W = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def vin():
    while True:
        chars = [rng.choice(VIN_CHARS) for _ in range(17)]
        chars[9] = rng.choice("ABCDEFGHJKLMNPRSTVWXY123456789")
        s = sum(VIN_VAL[c] * w for c, w in zip(chars, VIN_W)) % 11
        chars[8] = "X" if s == 10 else str(s)
        v = "".join(chars)
        if any(c.isdigit() for c in v) and any(c.isalpha() for c in v):
            return v


def bad_vin(v):
    d = v[8]
    options = [c for c in "0123456789X" if c != d]
    return v[:8] + rng.choice(options) + v[9:]


def nhs():
    while True:
        body = [rng.randint(0, 9) for _ in range(9)]
        body[0] = rng.randint(4, 9)
        s = sum(d * w for d, w in zip(body, range(10, 1, -1)))
        c = 11 - s % 11
        if c == 11:
            c = 0
        if c == 10:
            continue
        n = "".join(map(str, body)) + str(c)
        return rng.choice([" ", ""]).join([n[:3], n[3:6], n[6:]])


def bad_nhs(n):
    compact = n.replace(" ", "")
    while True:
        cand = compact[:-1] + str(rng.randint(0, 9))
        body = [int(c) for c in cand[:9]]
        s = sum(d * w for d, w in zip(body, range(10, 1, -1)))
        c = 11 - s % 11
        c = 0 if c == 11 else c
        if c != int(cand[9]):
            return cand[:3] + " " + cand[3:6] + " " + cand[6:]


def ssn():
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    group = rng.randint(1, 99)
    serial = rng.randint(1, 9999)
    sep = rng.choice(["-", " "])
    return "%03d%s%02d%s%04d" % (area, sep, group, sep, serial)


def bad_ssn():
    return rng.choice(["666-%02d-%04d" % (rng.randint(1, 99), rng.randint(1, 9999)),
                       "000-%02d-%04d" % (rng.randint(1, 99), rng.randint(1, 9999)),
                       "%03d-00-%04d" % (rng.randint(1, 665), rng.randint(1, 9999)),
                       "%03d-%02d-0000" % (rng.randint(1, 665), rng.randint(1, 99))])


def email():
    user = rng.choice(["jane.doe", "j.smith", "ops-team", "anna+news", "k_lee", "m.garcia77"])
    return user + "@" + rng.choice(["example.com", "mail.example.org", "corp.example.co.uk", "example.net"])


def phone():
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice(["(%d) %d-%04d", "%d-%d-%04d", "%d.%d.%04d", "+1 %d-%d-%04d"]) % (a, b, c)


def ip():
    if rng.random() < 0.8:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return "2001:db8:%x:%x::%x" % (rng.randint(1, 65535), rng.randint(1, 65535), rng.randint(1, 65535))


def mac():
    sep = rng.choice([":", "-"])
    return sep.join("%02x" % rng.randint(0, 255) for _ in range(6)).upper()


def url():
    return rng.choice(["https://", "http://"]) + rng.choice(["example.com", "docs.example.org", "shop.example.net"]) + "/" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6)) + rng.choice(["", "?id=42", "/index.html"])


def aws_key():
    return "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))


TEMPLATES = {
    "CREDIT_DEBIT_CARD_NUMBER": ["Please charge my card {v} for the order.", "The card on file is {v}, thanks.", "Use {v} to pay the invoice."],
    "CA_SOCIAL_INSURANCE_NUMBER": ["My SIN is {v} for the tax form.", "Employee social insurance: {v}.", "Canadian ID {v} was submitted."],
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": ["Wire the money to {v} by Friday.", "Our IBAN is {v}.", "Refund to account {v} please."],
    "US_BANK_ROUTING_NUMBER": ["The routing number is {v}.", "ABA {v} for direct deposit.", "Bank routing: {v}, account follows."],
    "VEHICLE_IDENTIFICATION_NUMBER": ["The car's VIN is {v}.", "Vehicle {v} needs a recall check.", "VIN: {v} (white sedan)."],
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": ["My NHS number is {v}.", "Patient {v} has an appointment.", "NHS no. {v} on the referral."],
    "US_SOCIAL_SECURITY_NUMBER": ["My social security number is {v}.", "SSN {v} was on the application.", "File under {v} please."],
    "EMAIL": ["Write to {v} for details.", "Contact: {v}", "My email is {v}."],
    "PHONE": ["Call me at {v} tomorrow.", "The office line is {v}.", "Phone: {v}"],
    "IP_ADDRESS": ["The server at {v} is down.", "Login came from {v}.", "Whitelist {v} please."],
    "MAC_ADDRESS": ["The laptop's MAC is {v}.", "Device {v} joined the network.", "Block hardware address {v}."],
    "URL": ["See {v} for the docs.", "The link is {v}", "Open {v} in a browser."],
    "AWS_ACCESS_KEY": ["The access key {v} leaked.", "Rotate {v} today.", "Key id: {v}"],
}

GEN = {
    "CREDIT_DEBIT_CARD_NUMBER": card, "CA_SOCIAL_INSURANCE_NUMBER": sin,
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": iban, "US_BANK_ROUTING_NUMBER": aba,
    "VEHICLE_IDENTIFICATION_NUMBER": vin, "UK_NATIONAL_HEALTH_SERVICE_NUMBER": nhs,
    "US_SOCIAL_SECURITY_NUMBER": ssn, "EMAIL": email, "PHONE": phone, "IP_ADDRESS": ip,
    "MAC_ADDRESS": mac, "URL": url, "AWS_ACCESS_KEY": aws_key,
}
CHECKSUM = ["CREDIT_DEBIT_CARD_NUMBER", "CA_SOCIAL_INSURANCE_NUMBER", "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
            "US_BANK_ROUTING_NUMBER", "VEHICLE_IDENTIFICATION_NUMBER", "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
            "US_SOCIAL_SECURITY_NUMBER"]
NEAR = {
    "CREDIT_DEBIT_CARD_NUMBER": lambda: bad_luhn(card()),
    "CA_SOCIAL_INSURANCE_NUMBER": lambda: bad_luhn(sin()),
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": lambda: bad_iban(iban()),
    "US_BANK_ROUTING_NUMBER": lambda: bad_last(aba()),
    "VEHICLE_IDENTIFICATION_NUMBER": lambda: bad_vin(vin()),
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": lambda: bad_nhs(nhs()),
    "US_SOCIAL_SECURITY_NUMBER": bad_ssn,
}

for kind, gen in GEN.items():
    count = 25 if kind in CHECKSUM else 10
    for _ in range(count):
        v = gen()
        print(json.dumps({"text": rng.choice(TEMPLATES[kind]).format(v=v), "entities": [{"type": kind, "value": v}]}))
# Two values in one text.
for _ in range(10):
    a, b = rng.sample(CHECKSUM, 2)
    va, vb = GEN[a](), GEN[b]()
    print(json.dumps({"text": "First %s, then %s." % (va, vb), "entities": [{"type": a, "value": va}, {"type": b, "value": vb}]}))
# Near misses: the right shape, a failing checksum.
for kind in CHECKSUM:
    for _ in range(12):
        v = NEAR[kind]()
        print(json.dumps({"text": rng.choice(TEMPLATES[kind]).format(v=v), "entities": [], "near_miss": kind}))
