// `client.fineTuning.content(...)` of the together-ai SDK, unchanged, against a server:
// node content.mjs BASE_URL API_KEY OUT_FILE QUERY_JSON. Writes the body, prints its size.
import { writeFile } from "node:fs/promises";
import Together from "together-ai";

const [baseURL, apiKey, out, query] = process.argv.slice(2);
const client = new Together({ apiKey, baseURL: `${baseURL}/v1`, maxRetries: 0 });
const response = await client.fineTuning.content(JSON.parse(query));
const body = Buffer.from(await response.arrayBuffer());
await writeFile(out, body);
console.log(JSON.stringify({ status: response.status, size: body.length }));
