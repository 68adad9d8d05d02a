package dev.tern.sample

import android.app.Application
import android.content.Context
import android.os.Build
import android.util.Log
import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import dev.tern.TernConfig
import dev.tern.Tracker
import dev.tern.android.TernLifecycle
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import java.util.Locale
import java.util.TimeZone
import kotlin.time.Duration.Companion.days
import kotlin.time.Duration.Companion.seconds

/** Owns the one Tracker of the process. */
class SampleApp : Application() {
    lateinit var tracker: Tracker
        private set

    override fun onCreate() {
        super.onCreate()
        val config = TernConfig.Builder(filesDir.resolve("tern.db").path, BuildConfig.TERN_ENDPOINT, BuildConfig.TERN_WRITE_KEY)
            .app(packageName, BuildConfig.VERSION_NAME, BuildConfig.VERSION_CODE.toString())
            .os("Android", Build.VERSION.RELEASE)
            .device(Build.MANUFACTURER, Build.MODEL)
            .locale(Locale.getDefault().toLanguageTag())
            .timezone(TimeZone.getDefault().id)
            // The SDK's defaults, tuned: upload every 30 s or 50 events, keep at most a week
            // offline. Every setting and its limits: TernConfig.Builder.
            .flushInterval(30.seconds)
            .flushAtCount(50)
            .maxEventAge(7.days)
            // Debug builds stop at a bad event; release builds only report it.
            .strict(BuildConfig.DEBUG)
            // track() never throws: what it does not take is reported here (on the calling
            // thread, so keep it short). A real app would send this to its crash reporter.
            .errorListener { error -> Log.w("TernSample", error.toString()) }
            .build()
        tracker = Tracker(config)
        // Upload at once when the app goes to the background (the SDK's own uploader).
        TernLifecycle.install(tracker)
        // And hand WorkManager an upload that waits for a network: if the phone is offline when
        // the app goes to the background, the events go when the network returns, even with the
        // app in the background or its process gone (WorkManager starts it again).
        ProcessLifecycleOwner.get().lifecycle.addObserver(object : DefaultLifecycleObserver {
            override fun onStop(owner: LifecycleOwner) = scheduleUploadWhenOnline(this@SampleApp)
        })
        // Events left from an earlier run (the app killed offline) get the same treatment.
        scheduleUploadWhenOnline(this)
    }

    companion object {
        private const val UPLOAD_WORK = "tern-upload"

        /**
         * Asks WorkManager to run [UploadWorker] once a network is connected. Unique work with
         * KEEP: calling it again while one is pending (or running) adds nothing, so it is cheap
         * to call on every start and every trip to the background.
         */
        fun scheduleUploadWhenOnline(context: Context) {
            val request = OneTimeWorkRequestBuilder<UploadWorker>()
                .setConstraints(Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build())
                .build()
            WorkManager.getInstance(context).enqueueUniqueWork(UPLOAD_WORK, ExistingWorkPolicy.KEEP, request)
        }
    }
}

/**
 * Runs when a network is connected: uploads what waits and waits for the collector's
 * acknowledgement. If that does not happen in time (the network went again, the collector
 * answered 503), WorkManager retries it later with its back-off, again only when connected.
 */
class UploadWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val tracker = (applicationContext as SampleApp).tracker
        // The network is back: skip a backoff that failures to connect left (does not block).
        tracker.networkAvailable()
        // flushAndWait blocks its thread for up to 20 s: keep it off the default dispatcher.
        val acknowledged = withContext(Dispatchers.IO) { tracker.flushAndWait(timeoutMs = 20_000) }
        return if (acknowledged) Result.success() else Result.retry()
    }
}
