#!/usr/bin/env python3
"""Load a synthetic population into a running gateway, for search benchmarks.

Each patient brings ten resources: the Patient (a valid NHS number, a name, a GP practice),
an Encounter, five Observations (heart rate, systolic blood pressure, body weight, BMI,
glucose), two DocumentReferences (a discharge summary and a clinic letter) and a Condition.
500 GP practices (Organization) come first. 100,000 patients make 1,000,500 resources.

Resources are PUT with predictable ids (Patient/p000001, Observation/o000001-1, ...) in
transactions of 100 patients, posted over mutual TLS by two workers. Values come from a seeded
generator, so two loads are identical. The NHS numbers of the patients are written to
--numbers-out, one per line, for the benchmark's URL list.

Usage:
  scripts/load-synthetic.py --base https://127.0.0.1:8443/fhir/r4 --ca certs/ca.pem \
      --cert certs/clients/bench.pem --key certs/clients/bench.key --patients 100000 \
      --numbers-out nhs-numbers.txt
"""

import argparse
import http.client
import json
import random
import ssl
import sys
import threading
import time
import urllib.parse

SURNAMES = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson",
            "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Thomas", "Clarke",
            "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper", "Hill", "Ward", "Hughes",
            "Moore", "Clark", "King", "Harrison", "Lewis", "Baker", "Lee", "Allen", "Morris", "Khan",
            "Scott", "Watson", "Davis", "Parker", "James", "Bennett", "Young", "Phillips", "Richardson", "Mitchell"]
GIVEN = ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Ivy", "Leo", "Lily",
         "Arthur", "Isabella", "Muhammad", "Rosie", "Oscar", "Sophia", "Charlie", "Grace"]
CITIES = ["Leeds", "Bradford", "Wakefield", "Harrogate", "York", "Huddersfield", "Halifax", "Dewsbury"]
CONDITIONS = [("44054006", "Type 2 diabetes mellitus"), ("38341003", "Hypertensive disorder"),
              ("195967001", "Asthma"), ("13645005", "Chronic obstructive lung disease"),
              ("35489007", "Depressive disorder")]
OBSERVATIONS = [  # (LOINC code, display, category, unit, UCUM code, low, high)
    ("8867-4", "Heart rate", "vital-signs", "beats/minute", "/min", 45, 130),
    ("8480-6", "Systolic blood pressure", "vital-signs", "mmHg", "mm[Hg]", 95, 185),
    ("29463-7", "Body weight", "vital-signs", "kg", "kg", 40, 140),
    ("39156-5", "Body mass index", "vital-signs", "kg/m2", "kg/m2", 16, 45),
    ("2339-0", "Glucose", "laboratory", "mmol/L", "mmol/L", 3, 15),
]
NHS = "https://fhir.nhs.uk/Id/nhs-number"
SNOMED = "http://snomed.info/sct"


def nhs_numbers():
    """Valid NHS numbers (Modulus 11), in order, from 900 000 000x."""
    stem = 900_000_000
    while True:
        digits = [int(c) for c in str(stem)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10:
            yield f"{stem}{check}"
        stem += 1


def day(rng, first_year, last_year):
    return f"{rng.randint(first_year, last_year)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def moment(rng, first_year, last_year):
    return f"{day(rng, first_year, last_year)}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def patient_resources(index, nhs_number, rng):
    pid = f"p{index:06d}"
    subject = {"reference": f"Patient/{pid}"}
    resources = [{
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": NHS, "value": nhs_number}],
        "name": [{"family": rng.choice(SURNAMES), "given": [rng.choice(GIVEN)]}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": day(rng, 1930, 2020),
        "address": [{"city": rng.choice(CITIES)}],
        "generalPractitioner": [{"reference": f"Organization/gp{index % 500:03d}"}],
    }]
    start = moment(rng, 2020, 2024)
    resources.append({
        "resourceType": "Encounter", "id": f"e{index:06d}", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": rng.choice(["AMB", "IMP", "EMER"])},
        "subject": subject, "period": {"start": start},
    })
    for number, (code, display, category, unit, ucum, low, high) in enumerate(OBSERVATIONS, 1):
        resources.append({
            "resourceType": "Observation", "id": f"o{index:06d}-{number}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": subject, "effectiveDateTime": moment(rng, 2019, 2024),
            "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": ucum},
        })
    for number, (code, display) in enumerate([("373942005", "Discharge summary"), ("371530004", "Clinical consultation report")], 1):
        resources.append({
            "resourceType": "DocumentReference", "id": f"d{index:06d}-{number}", "status": "current",
            "type": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
            "subject": subject, "date": moment(rng, 2020, 2024),
            "content": [{"attachment": {"contentType": "text/plain", "title": display}}],
        })
    code, display = rng.choice(CONDITIONS)
    resources.append({
        "resourceType": "Condition", "id": f"c{index:06d}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "subject": subject, "onsetDateTime": day(rng, 1990, 2024),
    })
    return resources


def transaction(resources):
    return json.dumps({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources],
    }, separators=(",", ":")).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True, help="bearer token (hie-gateway token --kind system ...)")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--per-bundle", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--numbers-out")
    parser.add_argument("--dry-run", action="store_true", help="only write --numbers-out (the data is already loaded)")
    args = parser.parse_args()

    url = urllib.parse.urlparse(args.base)
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)

    numbers = nhs_numbers()
    assigned = [next(numbers) for _ in range(args.patients)]
    if args.numbers_out:
        with open(args.numbers_out, "w") as out:
            out.write("\n".join(assigned) + "\n")
    if args.dry_run:
        return

    batches = [[{"resourceType": "Organization", "id": f"gp{n:03d}", "name": f"Practice {n}",
                 "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": f"Y{n:05d}"}]}
                for n in range(500)]]
    lock = threading.Lock()
    state = {"next": 0, "posted": 0, "failed": None}

    def batch(number):
        first = number * args.per_bundle
        rng = random.Random(number)
        resources = []
        for index in range(first, min(first + args.per_bundle, args.patients)):
            resources.extend(patient_resources(index, assigned[index], rng))
        return resources

    def post(connection, body):
        connection.request("POST", url.path, body=body, headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal", "Authorization": f"Bearer {args.token}"})
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {text[:500]!r}")

    def worker():
        connection = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=300)
        while True:
            with lock:
                if state["failed"]:
                    return
                number = state["next"]
                state["next"] += 1
            if number * args.per_bundle >= args.patients:
                return
            try:
                post(connection, transaction(batch(number)))
            except Exception as error:  # report and stop every worker
                with lock:
                    state["failed"] = f"bundle {number}: {error}"
                return
            with lock:
                state["posted"] += 1

    started = time.monotonic()
    connection = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=300)
    post(connection, transaction(batches[0]))
    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if state["failed"]:
        sys.exit(f"load failed: {state['failed']}")
    elapsed = time.monotonic() - started
    total = args.patients * 10 + 500
    print(f"loaded {total} resources in {elapsed:.0f} s ({total / elapsed:.0f} resources/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
