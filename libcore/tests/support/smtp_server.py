"""A real SMTP server for the notice tests (aiosmtpd), started by support/smtp.rs.

Usage: smtp_server.py PORT LOG. Every accepted message is appended to LOG as one JSON line
{"time": unix seconds, "to": [...], "subject": ..., "body": ...}. Recipients steer it:
a local part containing "tempfail" is refused once with 451 (then accepted), one containing
"reject" always with 550, and a message to one containing "slow" is logged, then answered
only after 30 seconds (so a test can kill the sender while it waits for the reply).
"""
import asyncio
import email
import json
import sys
import time

from aiosmtpd.controller import Controller

PORT, LOG = int(sys.argv[1]), sys.argv[2]
seen = set()


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if "reject" in local:
            return "550 5.1.1 no such mailbox here"
        if "tempfail" in local and address not in seen:
            seen.add(address)
            return "451 4.3.0 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        body = message.get_payload(decode=True) or b""
        with open(LOG, "a") as log:
            log.write(json.dumps({
                "time": time.time(),
                "to": envelope.rcpt_tos,
                "from": envelope.mail_from,
                "subject": str(email.header.make_header(email.header.decode_header(message["Subject"] or ""))),
                "body": body.decode("utf-8", "replace"),
            }) + "\n")
        if any("slow" in rcpt for rcpt in envelope.rcpt_tos):
            await asyncio.sleep(30)
        return "250 Message accepted for delivery"


controller = Controller(Handler(), hostname="127.0.0.1", port=PORT)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
