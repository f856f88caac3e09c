"""The Kubernetes manifests against the Kubernetes API schemas (PyPI `kubernetes-validate`,
pinned in scripts/test.sh), for tests/api/kubernetes.rs.

    kubernetes_manifests.py DIR   validates, strictly, every resource DIR/kustomization.yaml
                                  lists; prints them all as one JSON array, or exits non-zero
                                  naming the file and the error
"""
import json
import os
import sys

import kubernetes_validate
import yaml


def main() -> None:
    directory = sys.argv[1]
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    version = kubernetes_validate.latest_version()
    documents = []
    for resource in kustomization["resources"]:
        with open(os.path.join(directory, resource)) as f:
            for document in yaml.safe_load_all(f):
                try:
                    kubernetes_validate.validate(document, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    sys.exit(f"{resource}: {error.message} at {list(error.path)}")
                documents.append(document)
    json.dump(documents, sys.stdout)


if __name__ == "__main__":
    main()
