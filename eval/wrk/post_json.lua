-- POST a JSON body to wrk's URL and count the responses that are not 2xx (eval/bench_http.py runs this).
--
--   wrk -s eval/wrk/post_json.lua URL -- BODY_FILE [QUESTIONS_FILE NONCE]
--
-- BODY_FILE holds the JSON body. Without QUESTIONS_FILE every request sends it unchanged (the cache-hit
-- scenario). With it, BODY_FILE is a template whose "{question}" is replaced per request by the next question
-- of QUESTIONS_FILE (one a line, no quote or backslash) followed by a tag unique to this run, thread and
-- request: " (NONCE-THREAD-N)". No two requests then share a question text, so both the answer cache and the
-- question-vector cache miss. At the end one line "RAGKB_WRK {json}" gives the counts and p50/p95/p99 (ms).

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local function read_file(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local text = file:read("*a")
  file:close()
  return text
end

local template, questions, nonce, fixed_request
local sent = 0

function init(args)
  responses, non2xx, statuses = 0, 0, {}
  template = read_file(args[1])
  if args[2] ~= nil then
    questions = {}
    for line in read_file(args[2]):gmatch("[^\n]+") do
      table.insert(questions, line)
    end
    assert(#questions > 0, "no questions in " .. args[2])
    nonce = args[3] or "0"
  else
    fixed_request = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, template)
  end
end

function request()
  if fixed_request ~= nil then
    return fixed_request
  end
  sent = sent + 1
  local question = questions[(sent - 1) % #questions + 1]
    .. " (" .. nonce .. "-" .. tostring(thread_id) .. "-" .. tostring(sent) .. ")"
  local body = template:gsub("{question}", function() return question end)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_responses, total_non2xx, by_status = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_responses = total_responses + thread:get("responses")
    total_non2xx = total_non2xx + thread:get("non2xx")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'RAGKB_WRK {"requests": %d, "duration_us": %d, "responses": %d, "non2xx": %d, "non2xx_by_status": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"p50_ms": %.4f, "p95_ms": %.4f, "p99_ms": %.4f}\n',
    summary.requests, summary.duration, total_responses, total_non2xx, table.concat(parts, ", "),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000
  ))
end
