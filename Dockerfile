# brokerwatch collector image: `docker build -t brokerwatch .` then
# `docker run -p 2055:2055/udp -p 4739:4739/udp -p 4739:4739 -p 6343:6343/udp -p 5514:5514/udp -p 5514:5514 brokerwatch`
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/var/cache/brokerwatch/numba \
    BROKERWATCH_DEVICE_PROFILES=/opt/brokerwatch/device_profiles

WORKDIR /opt/brokerwatch
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY analytics ./analytics
COPY device_profiles ./device_profiles
COPY brokerwatch.example.yaml ./

# site-packages stays read-only for the service user; numba's cache goes to a writable directory instead, and is
# filled at build time (`brokerwatch warmup`), so the container's first start loads its kernels instead of compiling.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/brokerwatch --create-home brokerwatch \
    && mkdir -p /var/cache/brokerwatch/numba \
    && brokerwatch warmup \
    && chown -R brokerwatch /var/cache/brokerwatch

USER 10001
WORKDIR /var/lib/brokerwatch

# NetFlow v5/v9 + IPFIX (UDP 2055, UDP+TCP 4739), sFlow (UDP 6343), syslog (UDP+TCP 5514), host logs (TCP 5515).
EXPOSE 2055/udp 4739/udp 4739/tcp 6343/udp 5514/udp 5514/tcp 5515/tcp

ENTRYPOINT ["brokerwatch"]
CMD ["run"]
