"""Drives a Skiff control plane with the official Kubernetes Python client.

Usage: list_and_watch.py KUBECONFIG NAMESPACE NEW_POD

Lists the pods of NAMESPACE, starts a watch from the list's resourceVersion,
creates NEW_POD while the watch runs, and waits for the watch to report it as
ADDED. Prints one JSON document with what it saw and exits non-zero if the
event never came.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch

WATCH_TIMEOUT_SECONDS = 30


def main():
    kubeconfig, namespace, new_pod = sys.argv[1:4]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    pods = v1.list_namespaced_pod(namespace)
    listed = sorted(p.metadata.name for p in pods.items)
    all_namespaces = sorted(
        f"{p.metadata.namespace}/{p.metadata.name}"
        for p in v1.list_pod_for_all_namespaces().items
    )
    list_rv = pods.metadata.resource_version

    events = []
    errors = []
    seen = threading.Event()
    watching = threading.Event()

    def run_watch():
        w = watch.Watch()
        try:
            stream = w.stream(
                v1.list_namespaced_pod,
                namespace,
                resource_version=list_rv,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
            )
            watching.set()
            for event in stream:
                obj = event["object"]
                events.append([event["type"], obj.metadata.name])
                if event["type"] == "ADDED" and obj.metadata.name == new_pod:
                    seen.set()
                    w.stop()
            if ["ADDED", new_pod] not in events:
                # The client sends watch=True (capitalised, as Python prints
                # booleans); a server that reads that as false answers with a
                # plain list, and the stream ends with no events.
                errors.append(
                    f"watch: stream ended after {len(events)} events without ADDED {new_pod}"
                )
        except Exception as exc:  # reported in the JSON, judged by the test
            errors.append(f"watch: {exc!r}")
        finally:
            seen.set()

    thread = threading.Thread(target=run_watch, daemon=True)
    thread.start()
    watching.wait(5)
    # The generator connects lazily; give the request a moment to reach the
    # server. Events after list_rv are delivered either way.
    time.sleep(1)

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=new_pod, labels={"made-by": "python"}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="busybox:1.36")]
        ),
    )
    created = v1.create_namespaced_pod(namespace, pod)

    seen.wait(WATCH_TIMEOUT_SECONDS + 5)
    added = ["ADDED", new_pod] in events
    print(
        json.dumps(
            {
                "listed": listed,
                "all_namespaces": all_namespaces,
                "list_resource_version": list_rv,
                "created_uid": created.metadata.uid,
                "events": events,
                "errors": errors,
                "added_seen": added,
            }
        )
    )
    return 0 if added and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
