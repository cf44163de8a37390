#!/usr/bin/env python3
"""A model, not a measurement: what a burst of users does to the stack, second by second.

It plays the parts that decide capacity, with the template's rules and the figures it is
given (defaults: README, "Capacity planning"):

- Meta posts each user's message to the webhook, and the three status webhooks (sent, delivered,
  read) of each reply; API Gateway lets them through a token bucket (WebhookRateLimit requests
  per second, WebhookBurstLimit at once) and answers 429 to the rest, which Meta posts again
  later (counted, not replayed: Meta does not publish its retry schedule).
- The FIFO queue holds one group per user. Lambda's event source runs at most
  ProcessorMaxConcurrency invocations; each takes up to 10 waiting messages (FIFO queues have no
  batching window) and answers them concurrently, so that it lasts as long as its slowest LLM
  call plus the pipeline's own time.
- LLM latency is log-normal around the given median (a stated input: the provider's, not ours).

Prints when the last user was answered, the users' waits, the queue's oldest age (what the
queue-backlog alarm watches), the LLM's request rate, and the webhook requests throttled.
Deterministic (fixed seed). Standard library only: `python3 tests/bench/capacity-model.py -h`.
"""

import argparse
import heapq
import math
import random
import statistics

BATCH_SIZE = 10  # the template's BatchSize
STATUS_DELAYS = (0.5, 1.5, 8.0)  # sent, delivered, read: seconds after the reply (assumed)


def arrivals(users, seconds, rng):
    """One message per user, arriving uniformly at random over `seconds`."""
    return sorted(rng.uniform(0, seconds) for _ in range(users))


def llm_latency(median, sigma, rng):
    return median * math.exp(rng.gauss(0.0, sigma))


def run_processor(times, concurrency, median, sigma, overhead, rng):
    """Plays the event source and the processor; returns each message's reply time."""
    replies = [0.0] * len(times)
    free_at = [0.0] * concurrency  # heap: when each invocation slot is free
    heapq.heapify(free_at)
    next_message = 0
    while next_message < len(times):
        start = max(heapq.heappop(free_at), times[next_message])
        batch = []
        while (
            next_message < len(times)
            and times[next_message] <= start
            and len(batch) < BATCH_SIZE
        ):
            batch.append(next_message)
            next_message += 1
        duration = overhead + max(llm_latency(median, sigma, rng) for _ in batch)
        for message in batch:
            replies[message] = start + duration
        heapq.heappush(free_at, start + duration)
    return replies


def throttled(request_times, rate, burst):
    """Requests a token bucket of `rate` per second and `burst` tokens refuses."""
    tokens, last, refused = float(burst), 0.0, 0
    for t in sorted(request_times):
        tokens = min(burst, tokens + (t - last) * rate)
        last = t
        if tokens >= 1:
            tokens -= 1
        else:
            refused += 1
    return refused


def oldest_age_peak(times, replies):
    """Peak age of the oldest message not yet answered (sampled every second)."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    end = max(replies)
    peak, t = 0.0, 0.0
    while t <= end:
        waiting = [times[i] for i in order if times[i] <= t < replies[i]]
        if waiting:
            peak = max(peak, t - min(waiting))
        t += 1.0
    return peak


def peak_per_minute(times):
    times = sorted(times)
    peak, low = 0, 0
    for high, t in enumerate(times):
        while times[low] < t - 60:
            low += 1
        peak = max(peak, high - low + 1)
    return peak


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="over which they write")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 100],
                        help="ProcessorMaxConcurrency values to compare")
    parser.add_argument("--llm-median", type=float, default=2.0, help="seconds")
    parser.add_argument("--llm-sigma", type=float, default=0.35,
                        help="log-normal spread; 0.35 puts p99 at 2.3 x the median")
    parser.add_argument("--overhead", type=float, default=0.3,
                        help="the pipeline's own seconds per invocation (DynamoDB, Graph send)")
    parser.add_argument("--rate", type=float, nargs="+", default=[50, 1000],
                        help="WebhookRateLimit values to compare (burst: twice the rate)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    print(f"{args.users} users in {args.seconds:.0f} s, one message each; LLM median "
          f"{args.llm_median} s (sigma {args.llm_sigma}), {args.overhead} s of pipeline per "
          f"invocation; batches of up to {BATCH_SIZE}.\n")
    header = ("ProcessorMaxConcurrency", "last reply s", "wait p50 s", "wait p99 s",
              "oldest age peak s", "LLM requests/min peak")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    runs = {}
    for concurrency in args.concurrency:
        rng = random.Random(args.seed)
        times = arrivals(args.users, args.seconds, rng)
        replies = run_processor(times, concurrency, args.llm_median, args.llm_sigma,
                                args.overhead, rng)
        waits = [r - t for t, r in zip(times, replies)]
        runs[concurrency] = (times, replies)
        print(" | ".join(str(v) for v in (
            concurrency, f"{max(replies):.0f}", f"{statistics.median(waits):.1f}",
            f"{percentile(waits, 0.99):.1f}", f"{oldest_age_peak(times, replies):.0f}",
            peak_per_minute(replies))))

    print("\nWebhook requests (each message, then 3 statuses per reply) refused by API Gateway:\n")
    header = ("ProcessorMaxConcurrency", *(f"rate {r:.0f}/s, burst {2 * r:.0f}" for r in args.rate))
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for concurrency, (times, replies) in runs.items():
        requests = list(times) + [r + d for r in replies for d in STATUS_DELAYS]
        cells = []
        for rate in args.rate:
            refused = throttled(requests, rate, 2 * rate)
            cells.append(f"{refused} of {len(requests)} ({100 * refused / len(requests):.0f}%)")
        print(" | ".join([str(concurrency), *cells]))


if __name__ == "__main__":
    main()
