"""`python -m hegui.sidecar --service gs.yaml --upstream http://127.0.0.1:8080 --port 8443`;
`python -m hegui.sidecar capture --to-port 8443` for the capture init step (capture.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
import time
from pathlib import Path

import yaml

from hegui.api.generativeservice import GenerativeService, TritonEndpoint
from hegui.evidence import sidecar as evidence
from hegui.moderation.client import (
    RULE_MODELS,
    CombinedModerator,
    Moderator,
    RulesModerator,
    TritonModerator,
)
from hegui.moderation.lexicon import DEFAULT_LEXICON_DIR, LexiconStore
from hegui.moderation.records import RecordLog
from hegui.moderation.strikes import StrikeBook, Thresholds
from hegui.sidecar.app import Sidecar, serve
from hegui.sidecar.common import tune_gc
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.images_moderation import ImageClassifiers
from hegui.sidecar.suspension import FILE_NAME


def await_posture(path: Path, poll_seconds: float = 1.0) -> str:
    """The posture file's text, once it exists. The operator writes the sidecar's ConfigMap when
    it reconciles the service, so a pod applied together with its GenerativeService starts
    first, and the kubelet projects the ConfigMap (mounted optional) at its next sync, about a
    minute later. Exiting meanwhile put the pod in the kubelet's restart back-off (up to five
    minutes); waiting keeps it closed as well: nothing listens, the startupProbe fails, and the
    model container does not start before the sidecar serves (Art.14)."""
    said = False
    while True:
        try:
            return path.read_text("utf-8")
        except FileNotFoundError:
            if not said:
                said = True
                logging.getLogger("hegui.sidecar").warning(
                    "waiting for %s: hegui's operator writes it once it reconciles the "
                    "service; nothing is served until then", path)
            time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["capture"]:
        # The injected init container hegui-capture: the same image, its entrypoint, one step.
        from hegui.sidecar import capture

        sys.exit(capture.main(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m hegui.sidecar", description=__doc__)
    parser.add_argument("--service", type=Path, required=True,
                        help="the GenerativeService (YAML) whose moderation posture applies")
    parser.add_argument("--upstream", default="http://127.0.0.1:8080",
                        help="the model server, on localhost")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--triton", help="host:port of Triton, overriding the posture's")
    parser.add_argument("--rules", choices=("in-process", "triton"), default="in-process",
                        help="where the lexicon and personal-information rules run: in the "
                             "sidecar (default: no network hop per streamed window) or in "
                             "Triton's rule models; Triton serves the classifier either way")
    parser.add_argument("--lexicon", type=Path, action="append",
                        help="a keyword directory or file, followed while running (a mounted "
                             "ConfigMap); repeatable; default: the lexicon shipped with hegui")
    parser.add_argument("--user-header", default="x-hegui-user")
    parser.add_argument("--user-jwt-claim", default="",
                        help="take the user id from this claim of the bearer JWT, verified "
                             "with --user-jwt-key-file (the posture's moderation.users.identity "
                             "wins over both)")
    parser.add_argument("--user-jwt-key-file", type=Path,
                        help="the key that verifies users' JWTs: a PEM public key or a shared "
                             "secret (the Secret identity.jwtKeySecretRef names, mounted as a "
                             "file; Art.14)")
    parser.add_argument("--records", type=Path, help="the incident record file (Art.11)")
    parser.add_argument("--strikes", type=Path, help="the per-user strike book (Art.14)")
    parser.add_argument("--key-file", type=Path,
                        help="the pseudonymisation key (the Secret dataProtection."
                             "pseudonymisationKeyRef names, mounted as a file)")
    parser.add_argument("--watermark-key-file", type=Path,
                        help="the image watermark key (the Secret labeling.watermark."
                             "keySecretRef names, mounted as a file; Art.12)")
    parser.add_argument("--suspension", type=Path,
                        help="the operator's suspension notice (Art.21); default: "
                             "suspension.yaml next to --service (missing or invalid: "
                             "suspended)")
    parser.add_argument("--suspension-poll", type=float, default=2.0, metavar="SECONDS",
                        help="how often the suspension notice is checked for changes")
    evidence.add_arguments(parser)  # shipping records off the pod (Art.11)
    args = parser.parse_args(argv)
    if args.suspension_poll <= 0:
        parser.error("--suspension-poll must be a positive number of seconds")
    if args.user_jwt_claim and not args.user_jwt_key_file:
        parser.error("--user-jwt-claim needs --user-jwt-key-file: an unverified claim is "
                     "whatever the client wrote (Art.14)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = GenerativeService.from_dict(yaml.safe_load(await_posture(args.service)))
    key = args.key_file.read_bytes().strip() if args.key_file else b""
    config = SidecarConfig.from_service(service, upstream=args.upstream,
                                        user_header=args.user_header,
                                        user_jwt_claim=args.user_jwt_claim,
                                        user_jwt_key=(args.user_jwt_key_file.read_bytes()
                                                      .strip() if args.user_jwt_key_file
                                                      else None),
                                        pseudonymisation_key=key,
                                        suspension_file=args.suspension
                                        or args.service.parent / FILE_NAME,
                                        suspension_poll_seconds=args.suspension_poll,
                                        # hegui's ConfigMap: no notice is no permission to
                                        # serve, and posture changes apply while running.
                                        suspension_required=True, service_file=args.service,
                                        watermark_key=(args.watermark_key_file.read_bytes()
                                                       .strip() if args.watermark_key_file
                                                       else None))
    protection = service.spec.data_protection
    records = None
    if args.records and (protection is None or protection.retention_days > 0):
        records_key = key
        if not records_key and (protection.pseudonymise if protection else True):
            # A posture that names no key still gets pseudonymised records (Art.11), under a
            # key that lives only in this process: one user's records cannot be linked across
            # pods or restarts, which loses nothing the law asks for, and the sidecar starts
            # (it used to crash-loop). Strikes keep their own, replica-wide identity.
            logging.getLogger("hegui.sidecar").warning(
                "no pseudonymisation key (dataProtection.pseudonymisationKeyRef): records "
                "pseudonymise users with a key of this process only (Art.11)")
            records_key = secrets.token_bytes(32)
        records = RecordLog(args.records, key=records_key,
                            retention_days=protection.retention_days if protection else 180,
                            pseudonymise=protection.pseudonymise if protection else True)
        records.prune()
    strikes = None
    if args.strikes:  # the thresholds the posture declares (moderation.users, Art.14)
        strikes = StrikeBook(args.strikes, Thresholds.from_posture(config.moderation.users))
    endpoint = config.moderation.triton or TritonEndpoint(address="127.0.0.1:8001",
                                                          model="moderation")
    if args.triton:
        endpoint = endpoint.model_copy(update={"address": args.triton})
    moderator: Moderator = TritonModerator(endpoint, config.moderation_timeout)
    if args.rules == "in-process":
        store = LexiconStore(paths=tuple(args.lexicon or [DEFAULT_LEXICON_DIR]))
        store.watch(10.0)
        rules = RulesModerator(store)
        # A Triton model that only runs the same rules adds nothing but a hop.
        moderator = rules if endpoint.model in RULE_MODELS else CombinedModerator(rules,
                                                                                  moderator)
    # The image classifier (spec.moderation.images) on the same Triton, --triton included.
    sidecar = Sidecar(config, moderator, records=records, strikes=strikes,
                      image_classifiers=ImageClassifiers(address=args.triton))
    shipper = evidence.attach(args, records, service, registry=sidecar.metrics.registry)
    feed = None
    if shipper is not None and strikes is not None:
        # The service's strikes, not the pod's: merged from the other replicas' shipped records
        # (hegui.sidecar.shared_strikes, Art.14).
        from hegui.sidecar.shared_strikes import StrikeFeed

        feed = StrikeFeed(shipper.store, shipper.key, service=config.service,
                          own_stream=shipper.stream, book=strikes,
                          interval=args.evidence_interval, registry=sidecar.metrics.registry)
        feed.start()
    elif strikes is not None:
        logging.getLogger("hegui.sidecar").warning(
            "no evidence store: strikes count per pod, not per service (Art.14)")

    async def run() -> None:
        # Kubernetes deletes a pod with SIGTERM: stop taking connections, let the requests in
        # flight finish and write their records, then ship what waits, all within the grace
        # period (a SystemExit raised mid-response left a connection the runner waited 60 s on).
        main_task = asyncio.current_task()
        assert main_task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        runner = await serve(sidecar, args.host, args.port)
        # The lexicons, pinyin and rule tables loaded so far (~270k objects) live as long as the
        # process: kept out of the cyclic collector's scans, which ran in the middle of the
        # stream relay (bench/streaming.py: ~20% of the relay's CPU a chunk); and the collector
        # runs less often (common.GC_THRESHOLDS).
        tune_gc()
        try:
            while True:  # retention is applied hourly, not only at start (Art.11)
                await asyncio.sleep(3600)
                if records is not None:
                    await asyncio.to_thread(records.prune)
        except asyncio.CancelledError:
            pass  # SIGTERM: a clean exit
        finally:
            await runner.cleanup()
            if feed is not None:
                feed.stop()
            await asyncio.to_thread(evidence.detach, shipper)

    try:  # the sidecar extra installs uvloop: a cheaper event loop per streamed chunk
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run())


if __name__ == "__main__":
    main()
