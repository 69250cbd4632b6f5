# syntax=docker/dockerfile:1
# noderecover image: the package and its runtime extras installed into a venv under /opt in a
# throwaway stage, copied into a runtime stage with no compilers, no pip and no wheels, run as
# a non-root numeric user.
#
#   docker build -t noderecover .                     # on python:3.12-slim
#   buildah build --build-arg BASE=<image> -t noderecover .
#
# BASE: any image with python3 >= 3.11 on PATH and its venv module (`python3 -m venv` with
# pip), at the same path in both stages. The test command builds it on a Debian bookworm
# rootfs made by mmdebstrap (python3, python3-venv): see testkit's image.py.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# The runtime extras: every optional-dependencies group of pyproject.toml but the test and
# bench ones (the fence providers' libraries, when pyproject defines them).
# step: wheels
RUN extras=$(python3 -c 'import tomllib; x = set(tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {})) - {"test", "bench"}; print("[%s]" % ",".join(sorted(x)) if x else "")') \
    && python3 -m venv /opt/noderecover \
    && /opt/noderecover/bin/python -m pip wheel --no-cache-dir --wheel-dir /wheels ".${extras}" \
    && echo "noderecover${extras}" > /wheels/requirement
# step: install
RUN /opt/noderecover/bin/python -m pip install --no-cache-dir --no-index --find-links /wheels "$(cat /wheels/requirement)" \
    && /opt/noderecover/bin/python -m pip uninstall --yes pip setuptools \
    && rm -rf /wheels

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="noderecover" \
      org.opencontainers.image.description="Cordon, drain and remove dead nodes so StatefulSet pods move" \
      org.opencontainers.image.source="https://github.com/noderecover/noderecover" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# What the built-in fence providers need besides the venv's sushy (redfish) and boto3 (aws):
# the ClusterLabs fence agents that `--fence-provider fence-agent` runs from /usr/sbin
# (fence_ipmilan, fence_redfish, fence_aws, ...: Debian's fence-agents), and ipmitool, which
# fence_ipmilan calls and which that package does not pull. Without its recommends (telnet,
# ssh, snmp, sg3-utils: agents of old switches and SCSI reservations).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fence-agents ipmitool \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=build /opt/noderecover /opt/noderecover
ENV PATH=/opt/noderecover/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["noderecover", "run"]
