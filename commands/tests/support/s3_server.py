"""An S3-compatible server for the storage probe tests: moto on 127.0.0.1, on a free port.

Creates the bucket and an IAM user allowed to use it, then turns on moto's request authentication, so
that wrong credentials are refused as AWS would refuse them. Prints one JSON line
{"port": …, "access_key_id": …, "secret_access_key": …} when ready, then serves until killed.
"""

import argparse
import json
import sys
import threading

import boto3
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()

    endpoint = f"http://127.0.0.1:{port}"
    # Authentication is off until reset-auth below: these set-up calls need no real credentials.
    setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="recorder")
    iam.put_user_policy(
        UserName="recorder",
        PolicyName="recordings",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }),
    )
    key = iam.create_access_key(UserName="recorder")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=args.bucket)

    # What moto's /moto-api/reset-auth does, done in this process: authenticate every request from now on.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    print(json.dumps({"port": port, "access_key_id": key["AccessKeyId"],
                      "secret_access_key": key["SecretAccessKey"]}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
