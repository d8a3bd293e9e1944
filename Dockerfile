# gatehouse: static binary in a distroless, non-root image.
#   docker build --build-arg VERSION=v0.1.0 -t gatehouse .
#   docker run -v $PWD/gatehouse.yaml:/etc/gatehouse/gatehouse.yaml:ro -p 8080:8080 -p 9090:9090 gatehouse

# go1.27.3: Go 1.26.8 and earlier carry standard-library vulnerabilities
# reachable from gatehouse (README.md, "Go version"). Pinned to the patch
# release: the official images set GOTOOLCHAIN=local, so go.mod's toolchain
# line would not make an older image fetch it.
FROM golang:1.27.3 AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gatehouse .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gatehouse /gatehouse
USER nonroot
EXPOSE 8080 9090
# The config path comes from the environment, not CMD, so that
# `docker run gatehouse -t` or `-version` (which replace CMD) still find it.
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.yaml
ENTRYPOINT ["/gatehouse"]
