"""A grpcurl-like client on Debian's python3-grpcio: services described through server reflection, requests
built from the descriptors the server returns and filled from JSON. No lowbit proto files at all."""
import os
import subprocess
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def _reflection_pb2(reflection_root):
    """Stubs for the reflection protocol itself, generated from gRPC's own proto with Debian's protoc."""
    gen = tempfile.mkdtemp(prefix="reflection-py-")
    subprocess.check_call(["protoc", "-I", reflection_root, "--python_out", gen,
                           "grpc/reflection/v1alpha/reflection.proto"])
    # Loaded by path: the generated package "grpc.reflection" would otherwise collide with grpcio's "grpc".
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "reflection_pb2", os.path.join(gen, "grpc/reflection/v1alpha/reflection_pb2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReflectionClient:
    """The grpcurl workflow: list, describe, build messages from JSON, call."""

    def __init__(self, channel, reflection_root):
        reflection_pb2 = self.reflection_pb2 = _reflection_pb2(reflection_root)
        self.channel = channel
        self.info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.added = set()

    def _ask(self, **kwargs):
        return next(iter(self.info(iter([self.reflection_pb2.ServerReflectionRequest(**kwargs)]))))

    def list_services(self):
        return sorted(s.name for s in self._ask(list_services="").list_services_response.service)

    def _add_files(self, serialized):
        pending = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in serialized]
        # Add in dependency order; ask the server for any dependency it did not send.
        while pending:
            progress = False
            for fd in list(pending):
                if fd.name in self.added:
                    pending.remove(fd)
                    continue
                missing = [d for d in fd.dependency if d not in self.added]
                if not missing:
                    self.pool.Add(fd)
                    self.added.add(fd.name)
                    pending.remove(fd)
                    progress = True
            if not pending:
                break
            if not progress:
                for fd in pending:
                    for dep in fd.dependency:
                        if dep not in self.added and dep not in {p.name for p in pending}:
                            r = self._ask(file_by_filename=dep)
                            pending.extend(descriptor_pb2.FileDescriptorProto.FromString(b)
                                           for b in r.file_descriptor_response.file_descriptor_proto)
                            progress = True
                if not progress:
                    raise RuntimeError("unresolvable descriptors: %s" % [p.name for p in pending])

    def describe(self, symbol):
        r = self._ask(file_containing_symbol=symbol)
        assert r.HasField("file_descriptor_response"), r
        self._add_files(r.file_descriptor_response.file_descriptor_proto)
        return self.pool.FindServiceByName(symbol)

    def message_class(self, full_name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))

    def call(self, service, method, json_request, stream=False, timeout=30):
        m = self.pool.FindServiceByName(service).FindMethodByName(method)
        request = json_format.Parse(json_request, self.message_class(m.input_type.full_name)())
        response_class = self.message_class(m.output_type.full_name)
        path = "/%s/%s" % (service, method)
        if stream:
            rpc = self.channel.unary_stream(path, request_serializer=lambda x: x.SerializeToString(),
                                            response_deserializer=response_class.FromString)
            return rpc(request, timeout=timeout)
        rpc = self.channel.unary_unary(path, request_serializer=lambda x: x.SerializeToString(),
                                       response_deserializer=response_class.FromString)
        return rpc(request, timeout=timeout)

    def to_json(self, message):
        return json_format.MessageToJson(message, descriptor_pool=self.pool)
