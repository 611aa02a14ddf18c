// The Node openai SDK's `responses.create` (non-stream, then stream) against aisix.
// Run by tests/e2e/test_real_clients.py: prints one JSON line with what the SDK returned.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.AISIX_BASE_URL,
  apiKey: process.env.AISIX_API_KEY,
  maxRetries: 0,
  timeout: 20000,
});
const model = process.env.AISIX_MODEL;
const response = await client.responses.create({ model, input: "hello from node" });
let streamed = "";
let completed = null;
const stream = await client.responses.create({ model, input: "stream from node", stream: true });
for await (const event of stream) {
  if (event.type === "response.output_text.delta") streamed += event.delta;
  if (event.type === "response.completed") completed = event.response.status;
}
console.log(
  JSON.stringify({
    text: response.output_text,
    status: response.status,
    request_id: response._request_id,
    streamed,
    completed,
  }),
);
