import Network
import os
import SwiftUI
import Tern
import UIKit

@main
struct TernSampleApp: App {
    // With SwiftUI's scene life cycle UIKit does not call the app delegate's
    // applicationDidEnterBackground / applicationWillEnterForeground; the app's scene phase
    // (the aggregate of all its scenes) is how an App hears about background and foreground.
    @Environment(\.scenePhase) private var scenePhase

    init() {
        NetworkReturnUpload.shared.start(SampleTracker.shared)
    }

    var body: some Scene {
        WindowGroup { ContentView(tracker: SampleTracker.shared) }
            .onChange(of: scenePhase) { phase in
                switch phase {
                case .background:
                    BackgroundUpload.start(SampleTracker.shared)
                case .active:
                    // Cheap and idempotent: also runs after an interruption (.inactive → .active).
                    SampleTracker.shared.onForeground()
                default:
                    break
                }
            }
    }
}

private let sampleLog = Logger(subsystem: "dev.tern.sample", category: "analytics")

/// The one tracker of the process.
enum SampleTracker {
    static let shared: TernTracker = {
        let db = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("tern.db")
        try? FileManager.default.createDirectory(at: db.deletingLastPathComponent(), withIntermediateDirectories: true)
        let endpoint = Bundle.main.object(forInfoDictionaryKey: "TernEndpoint") as? String ?? "http://127.0.0.1:8080"
        let config = try! TernConfig.Builder(dbPath: db.path, endpoint: endpoint, writeKey: "dev-key")
            .os(name: UIDevice.current.systemName, version: UIDevice.current.systemVersion)
            .device(manufacturer: "Apple", model: UIDevice.current.model)
            // The SDK's defaults, tuned: upload every 30 s or 50 events, keep at most a week
            // offline. Every setting and its limits: TernConfig.Builder.
            .flushInterval(30)
            .flushAtCount(50)
            .maxEventAge(7 * 24 * 3600)
            // track() never throws: what it does not take is reported here (on the calling
            // thread, so keep it short). A real app would send this to its crash reporter.
            .errorListener { error in sampleLog.warning("\(error.description, privacy: .public)") }
        #if DEBUG
            // Debug builds stop at a bad event (assertionFailure); release builds only report it.
            .strict()
        #endif
            .build()
        // A tracker that cannot start (or a setting out of range) is a configuration error
        // worth a crash in a sample app.
        return try! TernTracker(config: config)
    }()
}

/// Uploads what waits when the app goes to the background, inside a background task that is
/// always ended: when the collector has acknowledged everything, when the wait times out, when
/// the SDK answers with an error, or when iOS says the time is up (expiration handler).
enum BackgroundUpload {
    /// iOS grants a background task about 30 s (not guaranteed); stop waiting before that, and
    /// let the expiration handler end the task if iOS gives less.
    static let waitMs: UInt64 = 25_000

    @MainActor
    static func start(_ tracker: TernTracker) {
        let application = UIApplication.shared
        var task: UIBackgroundTaskIdentifier = .invalid
        // Only ever called on the main thread (the expiration handler runs there, the
        // completion is sent there), so `task` needs no lock and the task is ended exactly once.
        let end = {
            guard task != .invalid else { return }
            application.endBackgroundTask(task)
            task = .invalid
        }
        task = application.beginBackgroundTask(withName: "tern-upload") { end() }
        tracker.onBackground()
        guard task != .invalid else {
            // No background time granted: the upload just started may finish or not; the
            // events stay in the buffer either way and go with the next upload.
            return
        }
        let waitMs = BackgroundUpload.waitMs
        DispatchQueue.global(qos: .utility).async {
            // Blocks this worker thread, never the main thread, until the collector has
            // acknowledged everything or the wait times out; an error (reported to the error
            // listener) ends the wait too.
            tracker.flushAndWait(timeoutMs: waitMs)
            DispatchQueue.main.async { end() }
        }
    }
}

/// Uploads what waits when the network comes back, the counterpart of the Android sample's
/// WorkManager job: after a long time offline the SDK's own retry may be minutes away, and a
/// path that turns satisfied is the moment to try.
final class NetworkReturnUpload {
    static let shared = NetworkReturnUpload()
    private let monitor = NWPathMonitor()
    private let queue = DispatchQueue(label: "dev.tern.sample.network")
    /// Only touched on `queue`, where every path update arrives.
    private var online = true

    func start(_ tracker: TernTracker) {
        monitor.pathUpdateHandler = { [weak self] path in
            guard let self else { return }
            let nowOnline = path.status == .satisfied
            if nowOnline && !self.online {
                // Skips a backoff left by failures to connect, at once (does not block).
                tracker.networkAvailable()
            }
            self.online = nowOnline
        }
        monitor.start(queue: queue)
    }
}

struct ContentView: View {
    let tracker: TernTracker
    @State private var pending: UInt64 = 0
    @State private var dropped: UInt64 = 0
    private let timer = Timer.publish(every: 0.5, on: .main, in: .common).autoconnect()

    var body: some View {
        VStack(spacing: 16) {
            Text("Events waiting in the buffer: \(pending)")
            Text("Events dropped on this device: \(dropped)")
            Button("Add to cart") { tracker.track("add_to_cart", properties: ["sku": "tern-mug", "price": 12.5]) }
            Button("Checkout") { tracker.track("checkout", properties: ["total": 12.5, "items": [["sku": "tern-mug"]]]) }
        }
        .padding()
        .onAppear { tracker.track("screen_view", properties: ["screen": "main"]) }
        .onReceive(timer) { _ in
            // pendingStats() reads the database: off the main thread.
            DispatchQueue.global(qos: .utility).async {
                let stats = tracker.pendingStats()
                DispatchQueue.main.async {
                    pending = stats.pendingEvents
                    dropped = stats.droppedEvents
                }
            }
        }
    }
}
