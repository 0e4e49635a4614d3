"""Create the retry queue, its dead-letter queue, stream mode's changes queue
(FIFO) and its dead-letter queue, and the SES sender in moto.

The queues are made from template.yaml's own definitions (their properties
become the queue attributes, parameters at their defaults), so the local
stack has the queues the cloud has; only the names, and the parameters given
with --set, differ.

Prints the queue URLs as JSON.

Usage: python aws_setup.py --endpoint URL [--prefix NAME] [--set Parameter=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
# Logical name in the template → the queue name here (before the prefix).
QUEUES = {
    "DeadLetterQueue": "retry-dlq",
    "RetryQueue": "retry",
    "ChangesDeadLetterQueue": "changes-dlq.fifo",
    "ChangesQueue": "changes.fifo",
}


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: !Ref X → {"Ref": X}, !GetAtt X.Y → {"GetAtt": "X.Y"}."""


def _tag(name: str):  # noqa: ANN202
    def construct(loader: _Loader, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            return {name: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {name: loader.construct_sequence(node, deep=True)}
        return {name: loader.construct_mapping(node, deep=True)}

    return construct


for _name in ("Ref", "GetAtt", "Sub", "If", "Equals", "Not", "And", "Or", "Join", "Select", "Split",
              "FindInMap", "ImportValue", "Condition", "Base64", "Cidr", "GetAZs"):
    _Loader.add_constructor(f"!{_name}", _tag(_name))


def queue_attributes(template: dict, logical: str, parameters: dict[str, str], arns: dict[str, str]) -> dict:
    """The CreateQueue attributes of queue resource `logical`: each property under its own name (SQS and
    CloudFormation name them alike), a !Ref resolved from `parameters` or the parameter's default, a
    redrive target's !GetAtt X.Arn from `arns`."""
    def value(v):  # noqa: ANN001, ANN202
        if isinstance(v, dict) and "Ref" in v:
            name = v["Ref"]
            return parameters.get(name, str(template["Parameters"][name]["Default"]))
        if isinstance(v, dict) and "GetAtt" in v:
            return arns[str(v["GetAtt"]).split(".")[0]]
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return json.dumps({k: value(x) for k, x in v.items()})
        return str(v)

    properties = template["Resources"][logical]["Properties"]
    return {name: value(v) for name, v in properties.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefix", default="countries")
    parser.add_argument("--set", action="append", default=[], metavar="PARAMETER=VALUE",
                        help="a template parameter to use instead of its default")
    parser.add_argument("--sender", default="replication@example.com")
    args = parser.parse_args()
    parameters = dict(item.split("=", 1) for item in args.set)
    template = yaml.load(TEMPLATE.read_text(), Loader=_Loader)  # noqa: S506 (a safe loader with tags)
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    sqs = session.client("sqs", endpoint_url=args.endpoint)
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    # Dead-letter queues first: the others name their ARN.
    for logical, name in QUEUES.items():
        attributes = queue_attributes(template, logical, parameters, arns)
        url = sqs.create_queue(QueueName=f"{args.prefix}-{name}", Attributes=attributes)["QueueUrl"]
        urls[logical] = url
        arns[logical] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    ses = session.client("sesv2", endpoint_url=args.endpoint)
    ses.create_email_identity(EmailIdentity=args.sender)
    print(
        json.dumps(
            {
                "retry_queue_url": urls["RetryQueue"],
                "dead_letter_queue_url": urls["DeadLetterQueue"],
                "changes_queue_url": urls["ChangesQueue"],
                "changes_dead_letter_queue_url": urls["ChangesDeadLetterQueue"],
                "sender": args.sender,
            }
        )
    )


if __name__ == "__main__":
    main()
