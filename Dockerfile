# syntax=docker/dockerfile:1
# noderecover image: wheels built in a throwaway stage, installed into a slim runtime with no
# compilers and no pip cache, run as a non-root numeric user.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# step: wheels
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="noderecover" \
      org.opencontainers.image.description="Cordon, drain and remove dead nodes so StatefulSet pods move" \
      org.opencontainers.image.source="https://github.com/noderecover/noderecover" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
# step: install
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels noderecover \
    && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["noderecover", "run"]
