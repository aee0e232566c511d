# kelp's image: the `kelp` binary on a root filesystem of its own shared libraries and
# CA certificates, run as user 65532. operator/image/build.sh builds the same image
# without a container engine (docs/install.md).
ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features -p kelp-operator --bin kelp \
 && operator/image/rootfs.sh target/release/kelp /rootfs

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/kelp"]
CMD ["run"]
