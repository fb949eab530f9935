# sitegrid images, one binary each. Build from the repository root:
#   docker build -t REGISTRY/sitegrid-manager:TAG .
#   docker build --build-arg BINARY=sitegrid-hub -t REGISTRY/sitegrid-hub:TAG .
# Binaries are static (CGO_ENABLED=0), as `make build` makes them.
ARG BINARY=sitegrid-manager

FROM golang:1.26 AS build
ARG BINARY
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/app ./cmd/${BINARY}

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
