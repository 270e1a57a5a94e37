export * from "../gen/fastsandbox/v1alpha1/resources_pb.js";
export * from "../gen/fastsandbox/v1alpha1/streams_pb.js";
export * from "../gen/fastsandbox/v1alpha1/sandbox_service_pb.js";
export * from "../gen/fastsandbox/v1alpha1/agent_service_pb.js";
