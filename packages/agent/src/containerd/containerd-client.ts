/**
 * A small typed gRPC client for containerd's services over its unix socket.
 *
 * The service and message descriptors come from the generated code in `gen/` (protoc-gen-es);
 * grpc-js only moves bytes: requests are encoded with `toBinary` and responses decoded with
 * `fromBinary`. Every call carries the `containerd-namespace` header (added by one interceptor)
 * and a deadline; errors are translated into FsbErrors in `grpc-errors.ts`. A call made with a
 * `leaseId` carries the `containerd-lease` header: what it creates belongs to that lease and is
 * safe from garbage collection until the lease is deleted.
 */
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Containers } from "./gen/github.com/containerd/containerd/api/services/containers/v1/containers_pb.js";
import { Content } from "./gen/github.com/containerd/containerd/api/services/content/v1/content_pb.js";
import { Diff } from "./gen/github.com/containerd/containerd/api/services/diff/v1/diff_pb.js";
import { Images } from "./gen/github.com/containerd/containerd/api/services/images/v1/images_pb.js";
import { Leases } from "./gen/github.com/containerd/containerd/api/services/leases/v1/leases_pb.js";
import { Snapshots } from "./gen/github.com/containerd/containerd/api/services/snapshots/v1/snapshots_pb.js";
import { Tasks } from "./gen/github.com/containerd/containerd/api/services/tasks/v1/tasks_pb.js";
import { Version } from "./gen/github.com/containerd/containerd/api/services/version/v1/version_pb.js";
import { translateGrpcError } from "./grpc-errors.js";

export interface CallOptions {
  /** Deadline of this call. @default the client's `defaultTimeoutMs` */
  timeoutMs?: number;
  /** containerd lease the call works under (header `containerd-lease`). @default none */
  leaseId?: string;
}

type UnaryMethod<I extends DescMessage, O extends DescMessage> = (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>;

type ServerStreamingMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => AsyncIterable<MessageShape<O>>;

/**
 * A bidirectional stream. containerd's Content.Write answers every request with one response, so
 * `exchange` sends a request and waits for that answer.
 */
export interface BidiStream<I extends DescMessage, O extends DescMessage> {
  exchange(request: MessageInitShape<I>): Promise<MessageShape<O>>;
  /** Half-closes the stream (no more requests). */
  end(): void;
  /** Cancels the call; safe to repeat and after the end. */
  cancel(): void;
}

type BidiStreamingMethod<I extends DescMessage, O extends DescMessage> = (options?: CallOptions) => BidiStream<I, O>;

/** A promise-based client for one generated service: one function per method, named by its localName. */
export type ServiceClient<M extends GenServiceMethods> = {
  [K in keyof M]: M[K] extends {
    methodKind: "unary";
    input: infer I;
    output: infer O;
  }
    ? I extends DescMessage
      ? O extends DescMessage
        ? UnaryMethod<I, O>
        : never
      : never
    : M[K] extends {
          methodKind: "server_streaming";
          input: infer I;
          output: infer O;
        }
      ? I extends DescMessage
        ? O extends DescMessage
          ? ServerStreamingMethod<I, O>
          : never
        : never
      : M[K] extends {
            methodKind: "bidi_streaming";
            input: infer I;
            output: infer O;
          }
        ? I extends DescMessage
          ? O extends DescMessage
            ? BidiStreamingMethod<I, O>
            : never
          : never
        : never;
};

export interface ContainerdClientOptions {
  /** @default "/run/containerd/containerd.sock" */
  socketPath?: string;
  /** containerd namespace sent with every call. */
  namespace: string;
  /** Deadline of calls that do not set one. @default 10_000 */
  defaultTimeoutMs?: number;
}

/**
 * How soon the channel tries containerd's socket again after it went away. grpc-js's defaults (1 s,
 * ×1.6 up to 120 s) suit a remote server; after a containerd restart that took a minute, every call
 * would fail fast (UNAVAILABLE) for up to two more minutes while the socket answers again. A local
 * unix socket costs nothing to try often.
 */
export const RECONNECT_OPTIONS = {
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 2_000,
} as const;

export class ContainerdClient {
  readonly namespace: string;
  readonly containers: ServiceClient<ServiceMethods<typeof Containers>>;
  readonly content: ServiceClient<ServiceMethods<typeof Content>>;
  readonly diff: ServiceClient<ServiceMethods<typeof Diff>>;
  readonly images: ServiceClient<ServiceMethods<typeof Images>>;
  readonly leases: ServiceClient<ServiceMethods<typeof Leases>>;
  readonly snapshots: ServiceClient<ServiceMethods<typeof Snapshots>>;
  readonly tasks: ServiceClient<ServiceMethods<typeof Tasks>>;
  readonly version: ServiceClient<ServiceMethods<typeof Version>>;

  private readonly grpcClient: grpc.Client;
  private readonly defaultTimeoutMs: number;

  constructor(options: ContainerdClientOptions) {
    const socketPath = options.socketPath ?? "/run/containerd/containerd.sock";
    this.namespace = options.namespace;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 10_000;
    const namespace = options.namespace;
    // The only place the namespace header is set: every call of every service passes through here.
    const namespaceInterceptor: grpc.Interceptor = (callOptions, nextCall) =>
      new grpc.InterceptingCall(nextCall(callOptions), {
        start(metadata, listener, next) {
          metadata.set("containerd-namespace", namespace);
          next(metadata, listener);
        },
      });
    this.grpcClient = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure(), {
      interceptors: [namespaceInterceptor],
      // containerd serves its own messages only; the default 4 MiB receive limit fits them.
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
      ...RECONNECT_OPTIONS,
    });
    this.containers = this.service(Containers);
    this.content = this.service(Content);
    this.diff = this.service(Diff);
    this.images = this.service(Images);
    this.leases = this.service(Leases);
    this.snapshots = this.service(Snapshots);
    this.tasks = this.service(Tasks);
    this.version = this.service(Version);
  }

  close(): void {
    this.grpcClient.close();
  }

  /** Builds a typed client for a generated service; client-streaming methods are not supported. */
  service<M extends GenServiceMethods>(service: GenService<M>): ServiceClient<M> {
    const client: Record<string, unknown> = {};
    for (const method of service.methods) {
      if (method.methodKind === "unary") {
        client[method.localName] = this.unary(method);
      } else if (method.methodKind === "server_streaming") {
        client[method.localName] = this.serverStreaming(method);
      } else if (method.methodKind === "bidi_streaming") {
        client[method.localName] = this.bidiStreaming(method);
      }
    }
    return client as ServiceClient<M>;
  }

  private deadline(options: CallOptions | undefined): grpc.CallOptions {
    return {
      deadline: Date.now() + (options?.timeoutMs ?? this.defaultTimeoutMs),
    };
  }

  private static metadata(options: CallOptions | undefined): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (options?.leaseId) metadata.set("containerd-lease", options.leaseId);
    return metadata;
  }

  private unary(method: DescMethod) {
    const path = `/${method.parent.typeName}/${method.name}`;
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    return (request: MessageInitShape<DescMessage>, options?: CallOptions) =>
      new Promise<unknown>((resolve, reject) => {
        this.grpcClient.makeUnaryRequest(
          path,
          serialize,
          deserialize,
          create(method.input, request),
          ContainerdClient.metadata(options),
          this.deadline(options),
          (error, response) => {
            if (error) reject(translateGrpcError(error, path.slice(1)));
            else resolve(response);
          },
        );
      });
  }

  private serverStreaming(method: DescMethod) {
    const path = `/${method.parent.typeName}/${method.name}`;
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    const client = this.grpcClient;
    const deadline = (options: CallOptions | undefined) => this.deadline(options);
    return async function* (request: MessageInitShape<DescMessage>, options?: CallOptions) {
      const stream = client.makeServerStreamRequest(
        path,
        serialize,
        deserialize,
        create(method.input, request),
        ContainerdClient.metadata(options),
        deadline(options),
      );
      try {
        for await (const message of stream) yield message as unknown;
      } catch (error) {
        throw translateGrpcError(error, path.slice(1));
      } finally {
        stream.cancel();
      }
    };
  }

  private bidiStreaming(method: DescMethod) {
    const path = `/${method.parent.typeName}/${method.name}`;
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    return (options?: CallOptions): BidiStream<DescMessage, DescMessage> => {
      const stream = this.grpcClient.makeBidiStreamRequest(path, serialize, deserialize, ContainerdClient.metadata(options), this.deadline(options));
      const responses = (stream as AsyncIterable<MessageShape<DescMessage>>)[Symbol.asyncIterator]();
      let ended = false;
      return {
        exchange: async (request) => {
          if (ended) throw new Error(`${path}: the stream has ended`);
          stream.write(create(method.input, request));
          try {
            const next = await responses.next();
            if (next.done) throw new Error(`${path}: containerd closed the stream without an answer`);
            return next.value;
          } catch (error) {
            throw translateGrpcError(error, path.slice(1));
          }
        },
        end: () => {
          if (ended) return;
          ended = true;
          stream.end();
        },
        cancel: () => {
          ended = true;
          stream.cancel();
        },
      };
    };
  }
}

type ServiceMethods<S> = S extends GenService<infer M> ? M : never;

function serializer(schema: DescMessage) {
  return (message: MessageShape<DescMessage>): Buffer => {
    const bytes = toBinary(schema, message);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage) {
  return (bytes: Buffer): MessageShape<DescMessage> => fromBinary(schema, bytes);
}

/** A containerd filter value: a quoted string with `"` and `\` escaped. */
export function quoteFilterValue(value: string): string {
  return `"${value.replace(/[\\"]/g, (character) => `\\${character}`)}"`;
}
