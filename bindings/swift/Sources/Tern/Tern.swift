import Foundation
import TernFFI

/// Errors from the SDK (invalid input, dropped event, unavailable tracker, closed).
public typealias TernError = ApiError

/// What waits in the buffer; see `TernTracker.pendingStats()`.
public typealias TernStats = PendingStats

/// Tern's tracker for Swift: `try tracker.track("checkout", properties: ["total": 59.9])`.
///
/// Cheap and safe from any thread, the main thread included: events are handed to the SDK's own
/// threads, which store them in SQLite and upload them.
public final class TernTracker {
    private let inner: Tracker

    public init(dbPath: String, endpoint: String, writeKey: String, realtime: Bool = false,
                appId: String? = Bundle.main.bundleIdentifier,
                appVersion: String? = Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String,
                appBuild: String? = Bundle.main.infoDictionary?["CFBundleVersion"] as? String,
                osName: String? = nil, osVersion: String? = nil,
                deviceManufacturer: String? = "Apple", deviceModel: String? = nil,
                locale: String? = Locale.current.identifier,
                timezone: String? = TimeZone.current.identifier) throws {
        inner = try Tracker(config: TrackerConfig(
            dbPath: dbPath, endpoint: endpoint, writeKey: writeKey, realtime: realtime,
            appId: appId, appVersion: appVersion, appBuild: appBuild,
            osName: osName, osVersion: osVersion,
            deviceManufacturer: deviceManufacturer, deviceModel: deviceModel,
            locale: locale, timezone: timezone))
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
    public func shutdown() { inner.shutdown() }

    private static func json(_ properties: [String: Any]) throws -> String {
        guard JSONSerialization.isValidJSONObject(properties) else {
            throw ApiError.InvalidInput(reason: "properties are not JSON-serializable")
        }
        let data = try JSONSerialization.data(withJSONObject: properties, options: [])
        return String(decoding: data, as: UTF8.self)
    }
}
