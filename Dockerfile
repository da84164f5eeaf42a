FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY retention retention
COPY streams streams
COPY agents agents
COPY processor processor
COPY notifier notifier
RUN pip install --no-cache-dir '.[rocksdb]'
ENV CHURNWATCH_WEB_HOST=0.0.0.0 \
    CHURNWATCH_STORE=rocksdb:// \
    CHURNWATCH_DATADIR=/data
VOLUME /data
EXPOSE 6066
ENTRYPOINT ["churnwatch"]
CMD ["worker"]
