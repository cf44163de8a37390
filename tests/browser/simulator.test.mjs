// The WhatsApp simulator page of the local stack, in Debian's headless Chromium: a person types
// a message, and sees the bot's reply bubble and its ticks; then attaches a photo (made by the
// page's canvas) with a caption, and sees the offline stand-in's answer naming it; then asks the
// example shop about an order, and sees the tool call in the conversation before the answer
// the shop's data made. A second test picks the second business number (Café Luna) and is
// answered from it, and plays the handoff agent's phone panel. Run by tests/browser/run.sh, which
// provides the local stack's binary, a moto server and Chromium. A screenshot is written to
// target/simulator.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.LOCAL_STACK_BIN;
const endpoint = process.env.AWS_ENDPOINT_URL;

const SECOND_NUMBER = "106540352242923";
const AGENT_NUMBER = "15559990000";

async function startLocalStack(suffix = "") {
  assert.ok(binary, "LOCAL_STACK_BIN must name the local-stack binary (tests/browser/run.sh sets it)");
  assert.ok(endpoint, "AWS_ENDPOINT_URL must point at moto (tests/with-moto.sh sets it)");
  const stack = spawn(binary, ["--port", "0", "--aws-endpoint", endpoint, "--stack-name", `browser-${process.pid}${suffix}`], {
    env: { ...process.env, LLM_API_KEY: "", LLM_BASE_URL: "" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: stack.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the local stack did not start within 60 s")), 60_000);
    lines.on("line", (line) => {
      const match = line.match(/WhatsApp simulator: (\S+?)\/? /);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    stack.on("exit", (code) => reject(new Error(`the local stack exited with ${code}`)));
  });
  return { stack, url };
}

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

async function stop(browser, stack) {
  await browser.close();
  stack.kill("SIGINT");
  await Promise.race([once(stack, "exit"), new Promise((r) => setTimeout(r, 5_000))]);
  stack.kill("SIGKILL");
}

test("a message typed in the simulator gets a reply bubble with read ticks; an attached photo is seen", async () => {
  const { stack, url } = await startLocalStack();
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    await page.goto(url + "/");
    await page.waitForFunction(() => document.getElementById("banner").textContent.includes("stand-in"));
    assert.match(await page.textContent("#banner"), /Offline LLM stand-in/);

    await page.fill("#text", "Hello from the browser");
    await page.click("#send");
    await page.waitForSelector(".bubble.user:has-text('Hello from the browser')", { timeout: 30_000 });
    const reply = await page.waitForSelector(".bubble.bot", { timeout: 60_000 });
    assert.match(await reply.textContent(), /\[offline stand-in\] You said: "Hello from the browser"\./);
    // Meta's status webhooks arrive: sent, delivered, read.
    await page.waitForSelector(".bubble.bot .ticks.read", { timeout: 30_000 });
    assert.equal((await page.textContent(".bubble.bot .ticks")).trim(), "✓✓ read");

    // A photo, attached with a caption: the local stack keeps it, the processor downloads it
    // through the Graph stand-in's media flow, and the offline stand-in says what it received.
    const png = Buffer.from(await page.evaluate(() => {
      const canvas = Object.assign(document.createElement("canvas"), { width: 8, height: 8 });
      const context = canvas.getContext("2d");
      context.fillStyle = "#c0392b"; context.fillRect(0, 0, 8, 8);
      return canvas.toDataURL("image/png").split(",")[1];
    }), "base64");
    await page.fill("#text", "what colour is this?");
    await page.setInputFiles("#file", { name: "red.png", mimeType: "image/png", buffer: png });
    await page.waitForSelector(`.bubble.user:has-text('image red.png (${png.length} bytes)')`, { timeout: 30_000 });
    const answer = await page.waitForSelector(".bubble.bot:has-text('[image]')", { timeout: 60_000 });
    assert.match(await answer.textContent(),
      new RegExp(`You said: "\\[image\\] what colour is this\\?"\\. I received an image \\(image/png, ${png.length} bytes\\)\\.`));

    // The example shop: the banner says how to try it; an order question shows the call of
    // its API as a 🔧 line in the conversation, then the answer made from what it gave.
    assert.match(await page.textContent("#example"), /Where is my order A-1001\?/);
    await page.fill("#text", "Where is my order A-1001?");
    await page.click("#send");
    const tool = await page.waitForSelector(".bubble.tool", { timeout: 60_000 });
    assert.match(await tool.textContent(), /^🔧 order_status · 200 · \d+ ms · /);
    const shop = await page.waitForSelector(".bubble.bot:has-text('order_status answered')", { timeout: 60_000 });
    assert.match(await shop.textContent(), /"status":"shipped"/);
    const order = await page.$$eval(".bubble", (all) => all.map((b) => b.className));
    assert.ok(order.indexOf("bubble tool") < order.lastIndexOf("bubble bot"), order.join(", "));

    await page.screenshot({ path: path.join(root, "target", "simulator.png") });
  } finally {
    await stop(browser, stack);
  }
});

test("the number picker writes to the second business number; the agent phone shows and sends its messages", async (t) => {
  const { stack, url } = await startLocalStack("-numbers");
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1300, height: 700 } });
    await page.goto(url + "/");
    await page.waitForFunction(() => document.querySelectorAll("#number option").length === 2);
    const options = await page.$$eval("#number option", (all) => all.map((o) => [o.value, o.textContent]));
    assert.deepEqual(options.map(([value]) => value), ["106540352242922", SECOND_NUMBER]);
    assert.match(options[1][1], /^Café Luna \(106540352242923\)$/, "named from its settings");

    // Ana writes to Café Luna: the answer comes in that chat, sent from the second number.
    await page.selectOption("#number", SECOND_NUMBER);
    await page.fill("#text", "Hola, buenos días");
    await page.click("#send");
    const reply = await page.waitForSelector("#chat .bubble.bot", { timeout: 60_000 });
    const answer = await reply.textContent();
    assert.match(answer, /\[offline stand-in\] You said: "Hola, buenos días"\./);
    const events = await (await fetch(url + "/api/events")).json();
    const replies = events.filter((e) => e.kind === "reply" && e.user === "15550001111");
    assert.deepEqual(replies.map((e) => e.number), [SECOND_NUMBER], "answered from the second number alone");
    // The first number's chat with Ana is a different conversation, still empty.
    await page.selectOption("#number", "106540352242922");
    assert.equal(await page.$$eval("#chat .bubble", (all) => all.length), 0);
    await page.selectOption("#number", SECOND_NUMBER);
    assert.equal(await page.$$eval("#chat .bubble", (all) => all.length), 2);

    assert.match(answer, /Persona: "Eres el barista de Café Luna, una cafetería de especialidad\."/, "answered in Café Luna's voice");

    // The agent phone: one conversation per business number.
    assert.equal((await page.textContent("#agent h1")).trim(), `Agent phone +${AGENT_NUMBER}`);
    const sections = await page.$$eval("#agent-chats .agent-number h2", (all) => all.map((h) => h.textContent));
    assert.deepEqual(sections, ["Bluebell Home · 106540352242922", `Café Luna · ${SECOND_NUMBER}`]);

    // Ana asks for a person: Café Luna's handoff text in her chat, the processor's notice in the
    // agent's conversation with Café Luna (not with the other number).
    await page.fill("#text", "humano");
    await page.click("#send");
    await page.waitForSelector("#chat .bubble.bot:has-text('Te paso con una persona')", { timeout: 60_000 });
    const cafe = `#agent-chats .agent-number[data-number="${SECOND_NUMBER}"]`;
    const noticeBubble = await page.waitForSelector(`${cafe} .bubble.bot:has-text('asks for a person')`, { timeout: 30_000 });
    const reference = (await noticeBubble.textContent()).match(/#(\d+)/)[1];
    assert.equal(await page.$$eval(`#agent-chats .agent-number[data-number="106540352242922"] .bubble`, (all) => all.length), 0);

    // The agent answers from its phone with the reference: the webhook gets a signed message from
    // the agent's number to Café Luna's, and the processor relays it to Ana.
    await page.selectOption("#agent-to", SECOND_NUMBER);
    await page.fill("#agent-text", `#${reference} Hola Ana, soy Marta`);
    await page.click("#agent-send");
    await page.waitForSelector(`${cafe} .bubble.user:has-text('Hola Ana, soy Marta')`, { timeout: 30_000 });
    await page.waitForSelector("#chat .bubble.bot:has-text('Hola Ana, soy Marta')", { timeout: 60_000 });
    // Recorded once the webhook has answered.
    let fromAgent = [];
    for (const deadline = Date.now() + 30_000; fromAgent.length === 0 && Date.now() < deadline;) {
      const deliveries = await (await fetch(url + "/api/deliveries")).json();
      fromAgent = deliveries.filter((d) => d.from === AGENT_NUMBER);
      if (fromAgent.length === 0) await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(fromAgent.map((d) => [d.phone_number_id, d.type, d.webhook_status]), [[SECOND_NUMBER, "text", 200]]);

    await page.screenshot({ path: path.join(root, "target", "simulator-numbers.png") });
  } finally {
    await stop(browser, stack);
  }
});
