"""Create the retry queue, its dead-letter queue, stream mode's changes queue
(FIFO) and its dead-letter queue, and the SES sender in moto.

Prints the queue URLs as JSON. Each queue's redrive policy moves a message to
its dead-letter queue after MAX_RECEIVE_COUNT receives, as the SAM template
does in the cloud.

Usage: python aws_setup.py --endpoint URL [--prefix NAME] [--max-receive-count N]
"""

from __future__ import annotations

import argparse
import json

import boto3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefix", default="countries")
    parser.add_argument("--max-receive-count", type=int, default=5)
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--sender", default="replication@example.com")
    args = parser.parse_args()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    sqs = session.client("sqs", endpoint_url=args.endpoint)
    dlq_url = sqs.create_queue(
        QueueName=f"{args.prefix}-retry-dlq",
        Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    retry_url = sqs.create_queue(
        QueueName=f"{args.prefix}-retry",
        Attributes={
            "VisibilityTimeout": str(args.visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(args.max_receive_count)}
            ),
        },
    )["QueueUrl"]
    changes_dlq_url = sqs.create_queue(
        QueueName=f"{args.prefix}-changes-dlq.fifo",
        Attributes={"FifoQueue": "true", "MessageRetentionPeriod": str(14 * 24 * 3600)},
    )["QueueUrl"]
    changes_dlq_arn = sqs.get_queue_attributes(QueueUrl=changes_dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    changes_url = sqs.create_queue(
        QueueName=f"{args.prefix}-changes.fifo",
        Attributes={
            "FifoQueue": "true",
            "VisibilityTimeout": str(args.visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": changes_dlq_arn, "maxReceiveCount": str(args.max_receive_count)}
            ),
        },
    )["QueueUrl"]
    ses = session.client("sesv2", endpoint_url=args.endpoint)
    ses.create_email_identity(EmailIdentity=args.sender)
    print(
        json.dumps(
            {
                "retry_queue_url": retry_url,
                "dead_letter_queue_url": dlq_url,
                "changes_queue_url": changes_url,
                "changes_dead_letter_queue_url": changes_dlq_url,
                "sender": args.sender,
            }
        )
    )


if __name__ == "__main__":
    main()
