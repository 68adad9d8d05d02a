import Foundation
import os
import TernFFI

/// Errors from the SDK (invalid input, dropped event, unavailable tracker, closed): thrown by
/// `TernTracker`'s initializer and `TernConfig.Builder.build()`; the other calls never throw.
public typealias TernError = ApiError

/// What waits in the buffer; see `TernTracker.pendingStats()`.
public typealias TernStats = PendingStats

/// What performs the uploads' HTTP requests; `URLSessionHttpClient` by default. Implement it to
/// pin certificates or use the app's own stack; the contract is `URLSessionHttpClient`'s.
public typealias TernHttpClient = HttpClient
public typealias TernHttpRequest = HttpRequest
public typealias TernHttpResponse = HttpResponse
public typealias TernTransportError = TransportError

/// The default `HttpClient` (the protocol uniffi generates from the Rust trait): URLSession, so
/// the system's proxies, trust store and App Transport Security apply. It never follows a
/// redirect (a followed 302 would turn the POST into a GET whose 200 could delete the batch),
/// returns every HTTP answer, error statuses included, and throws `TransportError.Network` only
/// when no answer came. The SDK calls it synchronously on its uploader thread, never the main
/// thread, so waiting on a semaphore there is safe.
public final class URLSessionHttpClient: HttpClient, @unchecked Sendable {
    // URLSession is thread-safe; the delegate only refuses redirects.
    private let session: URLSession

    public init(configuration: URLSessionConfiguration = .ephemeral) {
        session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }

    deinit {
        // A session keeps its delegate (and itself) alive until it is invalidated.
        session.finishTasksAndInvalidate()
    }

    public func post(request: HttpRequest) throws -> HttpResponse {
        guard let url = URL(string: request.url) else {
            throw TransportError.Network(reason: "not a URL: \(request.url)")
        }
        let timeout = TimeInterval(request.timeoutMs) / 1000
        var urlRequest = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData,
                                    timeoutInterval: timeout)
        urlRequest.httpMethod = "POST"
        for (name, value) in request.headers {
            urlRequest.setValue(value, forHTTPHeaderField: name)
        }
        urlRequest.httpBody = request.body

        let done = DispatchSemaphore(value: 0)
        let result = Outcome()
        let task = session.dataTask(with: urlRequest) { data, response, error in
            result.data = data
            result.response = response
            result.error = error
            done.signal()
        }
        task.resume()
        // timeoutInterval bounds each wait for data; this bounds the whole request.
        if done.wait(timeout: .now() + timeout) == .timedOut {
            task.cancel()
            throw TransportError.Network(reason: "timed out after \(request.timeoutMs) ms")
        }
        guard let http = result.response as? HTTPURLResponse else {
            throw TransportError.Network(reason: result.error?.localizedDescription ?? "no HTTP answer")
        }
        return HttpResponse(
            status: UInt16(clamping: http.statusCode),
            retryAfter: http.value(forHTTPHeaderField: "Retry-After"),
            location: http.value(forHTTPHeaderField: "Location"),
            body: (result.data ?? Data()).prefix(Int(clamping: request.maxResponseBytes)))
    }

    /// What the data task's completion handler saw; read only after it signalled.
    private final class Outcome: @unchecked Sendable {
        var data: Data?
        var response: URLResponse?
        var error: Error?
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate {
        func urlSession(_ session: URLSession, task: URLSessionTask,
                        willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest,
                        completionHandler: @escaping (URLRequest?) -> Void) {
            // nil: the 3xx itself completes the task, as the answer.
            completionHandler(nil)
        }
    }
}

/// When to upload and what the buffer keeps; see `TernConfig.Builder`.
public typealias TernUploadPolicy = UploadPolicy

/// Why a call did not take what it was given. Each reason is logged once per tracker (the
/// first time), then only counted (`TernTracker.errorCounts()`).
public enum TrackErrorReason: String, CaseIterable, Sendable {
    /// A bad event name, properties over the limits (64 KiB, 16 levels) or not JSON-serializable.
    case invalidEvent = "invalid_event"
    /// Dropped on a full hand-off queue or a failing disk (also counted by the SDK and reported
    /// to the collector).
    case dropped
    /// The call came after `shutdown()`.
    case closed
    /// Anything else: an unexpected failure inside the SDK, worth reporting as a bug.
    case `internal`
}

/// What the error listener receives: which call, why, and the SDK's message (never the
/// event's properties).
public struct TrackError: Error, CustomStringConvertible {
    public let reason: TrackErrorReason
    /// The call that failed: `track`, `setSuperProperties`, `setOptOut`, `flush`, ...
    public let call: String
    /// The event's name, for `track`.
    public let eventName: String?
    public let message: String
    /// What the SDK threw.
    public let underlying: Error

    public var description: String {
        "TrackError(\(reason.rawValue), \(call)\(eventName.map { " " + $0 } ?? ""): \(message))"
    }
}

/// Everything a `TernTracker` starts with; build one with `TernConfig.Builder`:
///
///     let config = try TernConfig.Builder(dbPath: path, endpoint: url, writeKey: key)
///         .flushInterval(5)
///         .flushAtCount(20)
///         .errorListener { error in logger.warning("\(error)") }
///         .build()
///     let tracker = try TernTracker(config: config)
public struct TernConfig {
    public let dbPath: String
    public let endpoint: String
    public let writeKey: String
    /// When to upload and what the buffer keeps (checked against the SDK's limits).
    public let policy: UploadPolicy
    /// `track()` and the other calls stop the program with `assertionFailure` (debug builds
    /// only) after reporting an error: Swift cannot throw from a function that does not throw.
    public let strict: Bool
    /// Hears about every refused call, on the calling thread.
    public let errorListener: (@Sendable (TrackError) -> Void)?
    public let httpClient: HttpClient
    fileprivate let context: [String?]

    /// Builds a `TernConfig`. Every setting starts at the SDK's default (sdk/src/policy.rs);
    /// `build()` throws `ApiError.InvalidInput` naming the first setting out of the SDK's
    /// limits. Durations are in seconds.
    public struct Builder {
        private let dbPath: String
        private let endpoint: String
        private let writeKey: String
        private var policy = defaultUploadPolicy()
        private var strict = false
        private var errorListener: (@Sendable (TrackError) -> Void)?
        private var httpClient: HttpClient?
        private var context: [String?] = [
            Bundle.main.bundleIdentifier,
            Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String,
            Bundle.main.infoDictionary?["CFBundleVersion"] as? String,
            nil, nil, "Apple", nil, Locale.current.identifier, TimeZone.current.identifier,
        ]
        private var problems: [String] = []

        public init(dbPath: String, endpoint: String, writeKey: String) {
            self.dbPath = dbPath
            self.endpoint = endpoint
            self.writeKey = writeKey
        }

        /// The realtime preset: upload at every event and every 500 ms (events readable in
        /// under 2 s). Later `flushInterval` and `flushAtCount` calls override it.
        public func realtime() -> Builder {
            let preset = realtimeUploadPolicy()
            return with { $0.policy.flushIntervalMs = preset.flushIntervalMs; $0.policy.flushAtCount = preset.flushAtCount }
        }
        /// Upload what waits at least this often (default 10 s).
        public func flushInterval(_ seconds: TimeInterval) -> Builder {
            with { let value = $0.millis("flushInterval", seconds); $0.policy.flushIntervalMs = value }
        }
        /// Upload as soon as this many events wait (default 100).
        public func flushAtCount(_ count: Int) -> Builder {
            with { let value = UInt32(clamping: $0.count("flushAtCount", count)); $0.policy.flushAtCount = value }
        }
        /// Most events in one batch (default 250, at most 500).
        public func maxBatchEvents(_ count: Int) -> Builder {
            with { let value = UInt32(clamping: $0.count("maxBatchEvents", count)); $0.policy.maxBatchEvents = value }
        }
        /// Most uncompressed bytes of events in one batch (default 512 KiB, at most 5 MiB).
        public func maxBatchBytes(_ bytes: Int) -> Builder {
            with { let value = $0.count("maxBatchBytes", bytes); $0.policy.maxBatchBytes = value }
        }
        /// Most compressed bytes of one upload (default 512 KiB, at most 1 MiB).
        public func maxBatchCompressedBytes(_ bytes: Int) -> Builder {
            with { let value = $0.count("maxBatchCompressedBytes", bytes); $0.policy.maxBatchCompressedBytes = value }
        }
        /// Most events the buffer keeps; the oldest beyond are dropped and reported (default 100 000).
        public func maxBufferEvents(_ count: Int) -> Builder {
            with { let value = $0.count("maxBufferEvents", count); $0.policy.maxBufferEvents = value }
        }
        /// Most bytes of event JSON the buffer keeps (default 32 MiB).
        public func maxBufferBytes(_ bytes: Int) -> Builder {
            with { let value = $0.count("maxBufferBytes", bytes); $0.policy.maxBufferBytes = value }
        }
        /// Oldest event the buffer keeps (default 30 days).
        public func maxEventAge(_ seconds: TimeInterval) -> Builder {
            with { let value = $0.millis("maxEventAge", seconds); $0.policy.maxEventAgeMs = value }
        }
        /// Most refused batches kept in quarantine (default 50; 0 keeps none).
        public func maxQuarantineBatches(_ count: Int) -> Builder {
            with { let value = $0.count("maxQuarantineBatches", count); $0.policy.maxQuarantineBatches = value }
        }
        /// Most bytes of event JSON kept in quarantine (default 4 MiB; 0 keeps none).
        public func maxQuarantineBytes(_ bytes: Int) -> Builder {
            with { let value = $0.count("maxQuarantineBytes", bytes); $0.policy.maxQuarantineBytes = value }
        }
        /// First retry delay after a failed upload, before jitter (default 1 s).
        public func retryMinDelay(_ seconds: TimeInterval) -> Builder {
            with { let value = $0.millis("retryMinDelay", seconds); $0.policy.retryMinDelayMs = value }
        }
        /// Longest retry delay (default 5 minutes).
        public func retryMaxDelay(_ seconds: TimeInterval) -> Builder {
            with { let value = $0.millis("retryMaxDelay", seconds); $0.policy.retryMaxDelayMs = value }
        }
        /// Longest retry delay after attempts that got no answer (offline; default 60 s).
        public func maxConnectivityRetryDelay(_ seconds: TimeInterval) -> Builder {
            with {
                let value = $0.millis("maxConnectivityRetryDelay", seconds)
                $0.policy.maxConnectivityRetryDelayMs = value
            }
        }
        /// A session ends after this long without an event (default 30 minutes).
        public func sessionTimeout(_ seconds: TimeInterval) -> Builder {
            with { let value = $0.millis("sessionTimeout", seconds); $0.policy.sessionTimeoutMs = value }
        }
        /// Stop at the first refused call (`assertionFailure`, debug builds only) after
        /// reporting it; for tests and debug builds.
        public func strict(_ strict: Bool = true) -> Builder { with { $0.strict = strict } }
        /// Hears about every refused call; also settable later (`TernTracker.setErrorListener`).
        public func errorListener(_ listener: (@Sendable (TrackError) -> Void)?) -> Builder {
            with { $0.errorListener = listener }
        }
        /// Performs the uploads' HTTP requests (`URLSessionHttpClient` by default).
        public func httpClient(_ client: HttpClient) -> Builder { with { $0.httpClient = client } }
        /// The app's id, version and build (default: from the main bundle).
        public func app(id: String?, version: String? = nil, build: String? = nil) -> Builder {
            with { $0.context[0] = id; $0.context[1] = version; $0.context[2] = build }
        }
        /// The OS's name and version.
        public func os(name: String?, version: String? = nil) -> Builder {
            with { $0.context[3] = name; $0.context[4] = version }
        }
        /// The device's manufacturer (default "Apple") and model.
        public func device(manufacturer: String?, model: String? = nil) -> Builder {
            with { $0.context[5] = manufacturer; $0.context[6] = model }
        }
        /// The locale (BCP 47; default the current one).
        public func locale(_ locale: String?) -> Builder { with { $0.context[7] = locale } }
        /// The time zone (IANA; default the current one).
        public func timezone(_ timezone: String?) -> Builder { with { $0.context[8] = timezone } }

        /// The config; throws `ApiError.InvalidInput` naming the first setting out of range.
        public func build() throws -> TernConfig {
            if let problem = problems.first {
                throw ApiError.InvalidInput(reason: problem)
            }
            try checkUploadPolicy(policy: policy)
            return TernConfig(dbPath: dbPath, endpoint: endpoint, writeKey: writeKey, policy: policy,
                              strict: strict, errorListener: errorListener,
                              httpClient: httpClient ?? URLSessionHttpClient(), context: context)
        }

        private func with(_ change: (inout Builder) -> Void) -> Builder {
            var copy = self
            change(&copy)
            return copy
        }

        private mutating func millis(_ setting: String, _ seconds: TimeInterval) -> UInt64 {
            guard seconds >= 0, seconds.isFinite else {
                problems.append("\(setting) must be a finite number of seconds, at least 0, not \(seconds)")
                return 0
            }
            return UInt64(min(seconds * 1000, Double(UInt64.max / 2)).rounded())
        }

        private mutating func count(_ setting: String, _ n: Int) -> UInt64 {
            guard n >= 0 else {
                problems.append("\(setting) must not be negative, not \(n)")
                return 0
            }
            return UInt64(n)
        }
    }
}

/// Tern's tracker for Swift: `tracker.track("checkout", properties: ["total": 59.9])`.
///
/// Safe from any thread. `track` and the calls that set state never block or touch the disk on
/// the calling thread, so they suit the main thread: events are handed to the SDK's own threads,
/// which store them in SQLite and upload them. `flush`, `flushAndWait`, `shutdown` and
/// `pendingStats` wait for those threads or read the database: call them off the main thread.
///
/// **`track` never throws**, and neither do the other calls: an event it does not take (a bad
/// name, properties over the limits or not JSON-serializable, dropped on a full queue or a
/// failing disk, a call after `shutdown()`) is counted (`errorCounts()`), logged once per reason
/// (`os.Logger`, subsystem `dev.tern`), and passed to the error listener if one is set. With a
/// strict config the calls stop at `assertionFailure` after reporting (debug builds only). Only
/// the initializer throws: when the buffer cannot be opened or a setting is out of range.
public final class TernTracker: @unchecked Sendable {
    // The mutable state below is guarded by `lock`; it is only touched when a call failed, so
    // a tracker pays nothing for it on success.
    private let inner: Tracker
    private let strict: Bool
    private let lock = NSLock()
    private var errorListener: (@Sendable (TrackError) -> Void)?
    private var counts: [TrackErrorReason: UInt64] = [:]
    private var listenerFailures: UInt64 = 0
    private static let log = Logger(subsystem: "dev.tern", category: "tracker")

    public init(config: TernConfig) throws {
        let c = config.context
        inner = try Tracker(config: TrackerConfig(
            dbPath: config.dbPath, endpoint: config.endpoint, writeKey: config.writeKey,
            policy: config.policy,
            appId: c[0], appVersion: c[1], appBuild: c[2], osName: c[3], osVersion: c[4],
            deviceManufacturer: c[5], deviceModel: c[6], locale: c[7], timezone: c[8]),
            httpClient: config.httpClient)
        strict = config.strict
        errorListener = config.errorListener
    }

    /// The tracker with the default policy, or the realtime preset; for other settings,
    /// `init(config:)` with a `TernConfig.Builder`.
    public convenience init(dbPath: String, endpoint: String, writeKey: String, realtime: Bool = false,
                            appId: String? = Bundle.main.bundleIdentifier,
                            appVersion: String? = Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String,
                            appBuild: String? = Bundle.main.infoDictionary?["CFBundleVersion"] as? String,
                            osName: String? = nil, osVersion: String? = nil,
                            deviceManufacturer: String? = "Apple", deviceModel: String? = nil,
                            locale: String? = Locale.current.identifier,
                            timezone: String? = TimeZone.current.identifier,
                            httpClient: HttpClient = URLSessionHttpClient()) throws {
        var builder = TernConfig.Builder(dbPath: dbPath, endpoint: endpoint, writeKey: writeKey)
            .app(id: appId, version: appVersion, build: appBuild)
            .os(name: osName, version: osVersion)
            .device(manufacturer: deviceManufacturer, model: deviceModel)
            .locale(locale)
            .timezone(timezone)
            .httpClient(httpClient)
        if realtime {
            builder = builder.realtime()
        }
        try self.init(config: builder.build())
    }

    public var installId: String { inner.installId() }

    /// Sets (or, with nil, removes) the closure that hears about every refused call. It runs on
    /// the calling thread.
    public func setErrorListener(_ listener: (@Sendable (TrackError) -> Void)?) {
        lock.lock()
        errorListener = listener
        lock.unlock()
    }

    /// How many calls were refused since the tracker started, by reason.
    public func errorCounts() -> [TrackErrorReason: UInt64] {
        lock.lock()
        defer { lock.unlock() }
        return counts
    }

    /// Tracks an event; returns its event id, or nil when it was not taken (see the class
    /// documentation) or the user opted out. Properties are any JSON-serializable dictionary
    /// (nested dictionaries, arrays, numbers, strings, Bool, NSNull). Never throws.
    @discardableResult
    public func track(_ name: String, properties: [String: Any] = [:]) -> String? {
        guarded("track", name, nil) { try self.inner.track(name: name, propertiesJson: Self.json(properties)) }
    }

    public func identify(_ userId: String?) { inner.identify(userId: userId) }

    /// Properties added to every following event; refused ones are reported like `track`'s.
    public func setSuperProperties(_ properties: [String: Any]) {
        guarded("setSuperProperties", nil, ()) { try self.inner.setSuperProperties(propertiesJson: Self.json(properties)) }
    }

    public func reset() { inner.reset() }

    /// Waits (at most `timeoutMs`) until what was tracked is durable, then starts an upload.
    /// Returns whether durability was reached in time (false after `shutdown()`); it does not
    /// wait for the collector.
    @discardableResult
    public func flush(timeoutMs: UInt64 = 5_000) -> Bool {
        guarded("flush", nil, false) { try self.inner.flush(timeoutMs: timeoutMs) }
    }

    /// Flushes, then waits (at most `timeoutMs`) until the collector acknowledged everything in
    /// the buffer. Returns whether it did in time. Blocks the calling thread for up to
    /// `timeoutMs`: call it off the main thread, e.g. inside a background task.
    @discardableResult
    public func flushAndWait(timeoutMs: UInt64 = 30_000) -> Bool {
        guarded("flushAndWait", nil, false) { try self.inner.flushAndWait(timeoutMs: timeoutMs) }
    }

    public func onBackground() { inner.onBackground() }
    public func onForeground() { inner.onForeground() }
    /// The network is back (`NWPathMonitor`): upload now, skipping a backoff that came from
    /// connectivity failures; a server's backoff still holds. Does not block.
    public func networkAvailable() { inner.networkAvailable() }
    /// Stops collection and purges the buffer (true), or resumes (false).
    public func setOptOut(_ optedOut: Bool) {
        guarded("setOptOut", nil, ()) { try self.inner.setOptOut(optedOut: optedOut) }
    }
    public func pendingStats() -> TernStats { inner.pendingStats() }
    /// Stops the SDK's threads and closes the buffer, whose file can be opened again at once;
    /// buffered events stay for the next start. Later calls are refused as `.closed`.
    public func shutdown() { inner.shutdown() }

    /// Runs `body`; a failure is counted, logged once per reason and reported, and `fallback`
    /// returned.
    private func guarded<T>(_ call: String, _ eventName: String?, _ fallback: T, _ body: () throws -> T) -> T {
        do {
            return try body()
        } catch {
            refused(call, eventName, error)
            return fallback
        }
    }

    /// The reason and the SDK's explanation of a failure.
    private static func classify(_ error: Error) -> (TrackErrorReason, String) {
        guard let apiError = error as? ApiError else {
            return (.internal, String(describing: error))
        }
        switch apiError {
        case .InvalidInput(let why):
            return (.invalidEvent, why)
        case .Dropped(let why):
            return (.dropped, why)
        case .Closed:
            return (.closed, "the tracker is shut down")
        default:
            return (.internal, String(describing: apiError))
        }
    }

    private func refused(_ call: String, _ eventName: String?, _ error: Error) {
        let (reason, message) = Self.classify(error)
        lock.lock()
        let count = (counts[reason] ?? 0) + 1
        counts[reason] = count
        let listener = errorListener
        lock.unlock()
        if count == 1 {
            Self.log.warning("Tern: \(call, privacy: .public) refused (\(reason.rawValue, privacy: .public)): \(message, privacy: .public); later errors of this reason are only counted")
        }
        let report = TrackError(reason: reason, call: call, eventName: eventName, message: message, underlying: error)
        // A Swift closure cannot throw unless declared so; this one is not, so it cannot throw
        // into the caller (a crash inside it is the app's own, as with any closure).
        listener?(report)
        if strict {
            assertionFailure("Tern (strict): \(report)")
        }
    }

    private static func json(_ properties: [String: Any]) throws -> String {
        // JSONSerialization raises an Objective-C exception (which Swift cannot catch) for
        // what isValidJSONObject refuses: check first.
        guard JSONSerialization.isValidJSONObject(properties) else {
            throw ApiError.InvalidInput(reason: "properties are not JSON-serializable")
        }
        let data = try JSONSerialization.data(withJSONObject: properties, options: [])
        return String(decoding: data, as: UTF8.self)
    }
}
