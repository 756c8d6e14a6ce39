// One Bedrock Runtime call through the AWS SDK for JavaScript v3, for tests/e2e/test_js_sdk.py.
//
// Reads a job as JSON from stdin (or argv[2]):
//   {"endpoint": "http://127.0.0.1:8080", "region": "us-east-1",
//    "credentials": {"accessKeyId": "...", "secretAccessKey": "..."},
//    "command": "InvokeModel" | "InvokeModelWithResponseStream" | "Converse" | "ConverseStream"
//               | "CountTokens" | "StartAsyncInvoke",
//    "modelId": "stability.stable-diffusion-xl-v1", "body": {...}, "http2": false}
// and prints one JSON result to stdout:
//   {"protocol", "status", "requestId", "contentType", "body"}            InvokeModel
//   {"protocol", "status", "requestId", "contentType", "chunks", "others"} InvokeModelWithResponseStream
//   {"protocol", "status", "requestId"}                                    the other commands
//   {"protocol", "error": {"name", "message", "status", "fault", "requestId"}} whatever the SDK threw
// The other commands send `body` as CountTokens' invokeModel body and StartAsyncInvoke's modelInput, and a
// one-message chat to Converse and ConverseStream.
import { readFileSync } from "node:fs";

import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  StartAsyncInvokeCommand,
} from "@aws-sdk/client-bedrock-runtime";
import { NodeHttp2Handler, NodeHttpHandler } from "@smithy/node-http-handler";

const job = JSON.parse(process.argv[2] ?? readFileSync(0, "utf8"));

// Named explicitly both ways: this client's own default handler is NodeHttp2Handler.
const requestHandler = job.http2 ? new NodeHttp2Handler() : new NodeHttpHandler();
const client = new BedrockRuntimeClient({
  endpoint: job.endpoint,
  region: job.region ?? "us-east-1",
  credentials: job.credentials,
  requestHandler,
  maxAttempts: 1,
});
const input = {
  modelId: job.modelId ?? "stability.stable-diffusion-xl-v1",
  body: JSON.stringify(job.body),
  contentType: "application/json",
  accept: "application/json",
};
const decoder = new TextDecoder();

async function invokeModel() {
  const response = await client.send(new InvokeModelCommand(input));
  return { ...summary(response), body: JSON.parse(decoder.decode(response.body)) };
}

async function invokeModelWithResponseStream() {
  const response = await client.send(new InvokeModelWithResponseStreamCommand(input));
  const chunks = [];
  const others = [];
  for await (const event of response.body) {
    if (event.chunk) {
      chunks.push(JSON.parse(decoder.decode(event.chunk.bytes)));
    } else {
      others.push(event);
    }
  }
  return { ...summary(response), chunks, others };
}

const messages = [{ role: "user", content: [{ text: "a lighthouse" }] }];

async function converse() {
  return summary(await client.send(new ConverseCommand({ modelId: input.modelId, messages })));
}

async function converseStream() {
  const response = await client.send(new ConverseStreamCommand({ modelId: input.modelId, messages }));
  for await (const event of response.stream) {
    void event;
  }
  return summary(response);
}

async function countTokens() {
  const body = new TextEncoder().encode(input.body);
  const command = new CountTokensCommand({ modelId: input.modelId, input: { invokeModel: { body } } });
  return summary(await client.send(command));
}

async function startAsyncInvoke() {
  const command = new StartAsyncInvokeCommand({
    modelId: input.modelId,
    modelInput: job.body,
    outputDataConfig: { s3OutputDataConfig: { s3Uri: "s3://a-bucket/sdxl/" } },
  });
  return summary(await client.send(command));
}

function summary(response) {
  return {
    status: response.$metadata.httpStatusCode,
    requestId: response.$metadata.requestId,
    contentType: response.contentType,
  };
}

function describe(error) {
  return {
    name: error.name,
    message: error.message,
    status: error.$metadata?.httpStatusCode,
    fault: error.$fault,
    requestId: error.$metadata?.requestId,
  };
}

const commands = {
  InvokeModel: invokeModel,
  InvokeModelWithResponseStream: invokeModelWithResponseStream,
  Converse: converse,
  ConverseStream: converseStream,
  CountTokens: countTokens,
  StartAsyncInvoke: startAsyncInvoke,
};
const command = commands[job.command];
if (!command) {
  throw new Error(`unknown command ${JSON.stringify(job.command)}: one of ${Object.keys(commands)}`);
}
const protocol = requestHandler.metadata.handlerProtocol;
let result;
try {
  result = { protocol, ...(await command()) };
} catch (error) {
  result = { protocol, error: describe(error) };
} finally {
  // An HTTP/2 session stays open, and would keep node running, until the client lets it go.
  client.destroy();
}
process.stdout.write(JSON.stringify(result) + "\n");
