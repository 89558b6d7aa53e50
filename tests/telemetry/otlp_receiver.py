"""A real OTLP/HTTP trace receiver for tests/telemetry.rs.

Listens on 127.0.0.1 (port 0), writes its URL to argv[1] once listening,
and appends every span it receives to argv[2] as one JSON object per line:
{traceId, spanId, parentSpanId, name, kind, service, attributes}. It decodes
the protobuf the exporter sends (ExportTraceServiceRequest, from the
opentelemetry-proto package) and answers as a collector does.
"""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

ready_path, spans_path = sys.argv[1], sys.argv[2]


def value_of(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        lines = []
        for rs in request.resource_spans:
            service = next(
                (value_of(a.value) for a in rs.resource.attributes if a.key == "service.name"),
                None,
            )
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "traceId": s.trace_id.hex(),
                                "spanId": s.span_id.hex(),
                                "parentSpanId": s.parent_span_id.hex(),
                                "name": s.name,
                                "kind": s.kind,
                                "service": service,
                                "attributes": {a.key: value_of(a.value) for a in s.attributes},
                            }
                        )
                    )
        with open(spans_path, "a") as out:
            for line in lines:
                out.write(line + "\n")
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
with open(ready_path + ".tmp", "w") as f:
    f.write(f"http://127.0.0.1:{server.server_address[1]}")
import os

os.rename(ready_path + ".tmp", ready_path)
server.serve_forever()
