import SwiftUI
import Tern
import UIKit

@main
struct TernSampleApp: App {
    @UIApplicationDelegateAdaptor(AppDelegate.self) var appDelegate

    var body: some Scene {
        WindowGroup { ContentView(tracker: appDelegate.tracker) }
    }
}

final class AppDelegate: NSObject, UIApplicationDelegate {
    lazy var tracker: TernTracker = {
        let db = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("tern.db")
        try? FileManager.default.createDirectory(at: db.deletingLastPathComponent(), withIntermediateDirectories: true)
        let endpoint = Bundle.main.object(forInfoDictionaryKey: "TernEndpoint") as? String ?? "http://127.0.0.1:8080"
        // A tracker that cannot start is a configuration error worth a crash in a sample app.
        return try! TernTracker(dbPath: db.path, endpoint: endpoint, writeKey: "dev-key",
                                osName: UIDevice.current.systemName,
                                osVersion: UIDevice.current.systemVersion,
                                deviceModel: UIDevice.current.model)
    }()

    func applicationDidEnterBackground(_ application: UIApplication) {
        // Ask iOS for time to upload; the task is always ended, whether the upload finishes or
        // the time runs out.
        var task: UIBackgroundTaskIdentifier = .invalid
        let end = {
            if task != .invalid {
                application.endBackgroundTask(task)
                task = .invalid
            }
        }
        task = application.beginBackgroundTask(withName: "tern-flush") { end() }
        tracker.onBackground()
        DispatchQueue.global(qos: .utility).async { [tracker] in
            _ = try? tracker.flush(timeoutMs: 10_000)
            DispatchQueue.main.async { end() }
        }
    }

    func applicationWillEnterForeground(_ application: UIApplication) {
        tracker.onForeground()
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
            Button("Add to cart") { _ = try? tracker.track("add_to_cart", properties: ["sku": "tern-mug", "price": 12.5]) }
            Button("Checkout") { _ = try? tracker.track("checkout", properties: ["total": 12.5, "items": [["sku": "tern-mug"]]]) }
        }
        .padding()
        .onAppear { _ = try? tracker.track("screen_view", properties: ["screen": "main"]) }
        .onReceive(timer) { _ in
            let stats = tracker.pendingStats()
            pending = stats.pendingEvents
            dropped = stats.droppedEvents
        }
    }
}
