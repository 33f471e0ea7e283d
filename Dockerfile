# syntax=docker/dockerfile:1
# The s3sync container image: a stripped release binary (profile `dist`) on distroless (glibc, no
# shell), running as nonroot.
#   docker build -t s3sync .
#   docker run --rm -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY s3sync s3://from/ s3://to/
# Used by deploy/kubernetes/ for sharded syncs (see "Syncing with many machines" in README.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit caches keep the registry and the build directory between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist --bin s3sync \
 && cp target/dist/s3sync /s3sync

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /s3sync /usr/local/bin/s3sync
USER nonroot
ENTRYPOINT ["/usr/local/bin/s3sync"]
