import Foundation
import TernFFI

/// Errors from the SDK (invalid input, dropped event, unavailable tracker, closed).
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

/// Tern's tracker for Swift: `try tracker.track("checkout", properties: ["total": 59.9])`.
///
/// Safe from any thread. `track` and the calls that set state never block or touch the disk on
/// the calling thread, so they suit the main thread: events are handed to the SDK's own threads,
/// which store them in SQLite and upload them. `flush`, `flushAndWait`, `shutdown` and
/// `pendingStats` wait for those threads or read the database: call them off the main thread.
public final class TernTracker {
    private let inner: Tracker

    public init(dbPath: String, endpoint: String, writeKey: String, realtime: Bool = false,
                appId: String? = Bundle.main.bundleIdentifier,
                appVersion: String? = Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String,
                appBuild: String? = Bundle.main.infoDictionary?["CFBundleVersion"] as? String,
                osName: String? = nil, osVersion: String? = nil,
                deviceManufacturer: String? = "Apple", deviceModel: String? = nil,
                locale: String? = Locale.current.identifier,
                timezone: String? = TimeZone.current.identifier,
                httpClient: HttpClient = URLSessionHttpClient()) throws {
        inner = try Tracker(config: TrackerConfig(
            dbPath: dbPath, endpoint: endpoint, writeKey: writeKey, realtime: realtime,
            appId: appId, appVersion: appVersion, appBuild: appBuild,
            osName: osName, osVersion: osVersion,
            deviceManufacturer: deviceManufacturer, deviceModel: deviceModel,
            locale: locale, timezone: timezone), httpClient: httpClient)
    }

    public var installId: String { inner.installId() }

    /// Tracks an event; returns its event id (nil after opt-out). Properties are any
    /// JSON-serializable dictionary (nested dictionaries, arrays, numbers, strings, Bool, NSNull).
    @discardableResult
    public func track(_ name: String, properties: [String: Any] = [:]) throws -> String? {
        try inner.track(name: name, propertiesJson: Self.json(properties))
    }

    public func identify(_ userId: String?) { inner.identify(userId: userId) }

    public func setSuperProperties(_ properties: [String: Any]) throws {
        try inner.setSuperProperties(propertiesJson: Self.json(properties))
    }

    public func reset() { inner.reset() }

    /// Waits (at most `timeoutMs`) until what was tracked is durable, then starts an upload.
    /// Returns whether durability was reached in time; it does not wait for the collector.
    @discardableResult
    public func flush(timeoutMs: UInt64 = 5_000) throws -> Bool { try inner.flush(timeoutMs: timeoutMs) }

    /// Flushes, then waits (at most `timeoutMs`) until the collector acknowledged everything in
    /// the buffer. Returns whether it did in time. Blocks the calling thread for up to
    /// `timeoutMs`: call it off the main thread, e.g. inside a background task.
    @discardableResult
    public func flushAndWait(timeoutMs: UInt64 = 30_000) throws -> Bool {
        try inner.flushAndWait(timeoutMs: timeoutMs)
    }

    public func onBackground() { inner.onBackground() }
    public func onForeground() { inner.onForeground() }
    public func setOptOut(_ optedOut: Bool) throws { try inner.setOptOut(optedOut: optedOut) }
    public func pendingStats() -> TernStats { inner.pendingStats() }
    /// Stops the SDK's threads and closes the buffer, whose file can be opened again at once;
    /// buffered events stay for the next start. Later calls throw `ApiError.Closed`.
    public func shutdown() { inner.shutdown() }

    private static func json(_ properties: [String: Any]) throws -> String {
        guard JSONSerialization.isValidJSONObject(properties) else {
            throw ApiError.InvalidInput(reason: "properties are not JSON-serializable")
        }
        let data = try JSONSerialization.data(withJSONObject: properties, options: [])
        return String(decoding: data, as: UTF8.self)
    }
}
