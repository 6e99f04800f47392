#!/bin/sh
# Start `weed server -s3` with the access keys of the environment, then create the bucket.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
: "${S3_BUCKET:=mlflow}"
config=/tmp/s3.json
umask 077
python - "$config" <<'PY'
import json, os, sys
identity = {"name": "mlflow", "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"],
                                               "secretKey": os.environ["S3_SECRET_KEY"]}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
with open(sys.argv[1], "w") as handle:
    json.dump({"identities": [identity]}, handle)
PY
weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -master.telemetry=false -volume.max=0 \
    -s3 -s3.port=8333 -s3.config="$config" -s3.autoCreateBucket=false -s3.port.iceberg=0 -s3.port.lance=0 &
server=$!
trap 'kill -TERM "$server"' TERM INT
python - <<'PY'
import os, time
import boto3
client = boto3.client("s3", endpoint_url="http://127.0.0.1:8333", region_name="us-east-1",
                      aws_access_key_id=os.environ["S3_ACCESS_KEY"],
                      aws_secret_access_key=os.environ["S3_SECRET_KEY"])
bucket = os.environ.get("S3_BUCKET", "mlflow")
for _ in range(120):
    try:
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} is ready", flush=True)
        break
    except Exception:  # the S3 gateway is still starting
        time.sleep(1)
else:
    raise SystemExit(f"could not create bucket {bucket}")
PY
wait "$server"
