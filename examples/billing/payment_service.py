#!/usr/bin/env python3
"""The payment service of the billing demo (examples/billing/README.md).

It charges customers by sending one `charge` message per payment to the `charges` topic: the
customer as the key, {"customer", "amount"} as the JSON value, and a unique message id in the
header `id`. Its link to the broker is lossy: an acknowledgement is lost now and then
(`--ack-loss`), and the service, unable to tell whether the charge arrived, sends the same message
again with the same id. It also crashes (`--crash-after`) and, restarted, sends again every charge
after the last progress it saved. The topic (`dedup.source=header:id`) stores each id once.

The charges are fixed by `--seed`, so every run means the same payments; `intended.csv` says
what each customer should be charged in the end, for the walk-through to compare against.
"""

import argparse
import csv
import json
import os
import random
import sys

from confluent_kafka import Producer

# Keyed by customer, these land on all three partitions of the walk-through's topic.
CUSTOMERS = ["alice", "bob", "erin", "grace", "mallory"]
PROGRESS_EVERY = 50  # the service saves how far it got once per this many charges


def planned_charges(count, seed):
    """The payments the service means to make: (message id, customer, amount in cents)."""
    rng = random.Random(seed)
    return [(f"charge-{seed}-{n:05d}", rng.choice(CUSTOMERS), rng.randint(100, 9_999)) for n in range(count)]


def decimal(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def write_intended(charges, path):
    totals = {customer: [0, 0] for customer in CUSTOMERS}
    for _, customer, cents in charges:
        totals[customer][0] += 1
        totals[customer][1] += cents
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["customer", "charges", "amount"])
        for customer, (count, cents) in sorted(totals.items()):
            writer.writerow([customer, count, decimal(cents)])


def read_progress(path):
    try:
        with open(path) as file:
            return int(file.read().strip() or 0)
    except FileNotFoundError:
        return 0


def save_progress(path, done):
    with open(path + ".tmp", "w") as file:
        file.write(f"{done}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(path + ".tmp", path)


def send(producer, topic, charge):
    """Sends one charge and waits for its acknowledgement; True if the broker stored it."""
    message_id, customer, cents = charge
    outcome = []
    producer.produce(
        topic,
        key=customer,
        value=json.dumps({"customer": customer, "amount": decimal(cents)}),
        headers=[("id", message_id)],
        on_delivery=lambda error, _message: outcome.append(error),
    )
    producer.flush(30)
    return outcome == [None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="charges")
    parser.add_argument("--charges", type=int, default=2000, help="payments to make")
    parser.add_argument("--seed", type=int, default=7, help="which payments (the same seed, the same charges)")
    parser.add_argument("--ack-loss", type=float, default=0.3, help="share of acknowledgements lost on the way back")
    parser.add_argument("--crash-after", type=int, help="exit abruptly after sending this charge")
    parser.add_argument("--progress", default="payment-service.progress", help="how far the service got")
    parser.add_argument("--intended", default="intended.csv", help="where to write what each customer owes")
    args = parser.parse_args()

    charges = planned_charges(args.charges, args.seed)
    write_intended(charges, args.intended)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        # librdkafka >= 2.10 otherwise re-bootstraps after a broker restart and can hang (docs/clients.md).
        "metadata.recovery.strategy": "none",
        "acks": "all",
        "enable.idempotence": True,
    })
    start = read_progress(args.progress)
    link = random.Random(f"{args.seed}-{start}")
    sent = 0
    for number in range(start, len(charges)):
        while True:
            stored = send(producer, args.topic, charges[number])
            sent += 1
            if stored and link.random() >= args.ack_loss:
                break
            # No acknowledgement came back (or it was lost): send the same charge, same id, again.
        if number + 1 == args.crash_after:
            print(f"payment service: crashed after charge {number + 1} "
                  f"(progress saved at {read_progress(args.progress)}); {sent} messages sent", flush=True)
            os._exit(3)
        if (number + 1) % PROGRESS_EVERY == 0:
            save_progress(args.progress, number + 1)
    save_progress(args.progress, len(charges))
    print(f"payment service: charges {start + 1}..{len(charges)} done; "
          f"{sent} messages sent for {len(charges) - start} charges", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
